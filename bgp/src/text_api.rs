//! The line-oriented text API of `migroute bgp speak`, in the spirit of ExaBGP's:
//! commands in, one JSON object per event out. Parsing and rendering live here, not in
//! the binary, so that they are tested with the rest of the speaker.
//!
//! ```text
//! announce PREFIX [next-hop A] [local-pref N] [med N] [community A:B …] [large-community A:B:C …]
//! withdraw PREFIX
//! show peers
//! show routes
//! shutdown [MESSAGE]
//! ```

use serde_json::{json, Value};

use crate::codec::{Attribute, Community, LargeCommunity, Prefix};
use crate::events::SpeakerEvent;
use crate::policy::RouteAttrs;

/// One parsed input line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Announce(Prefix, RouteAttrs),
    Withdraw(Prefix),
    ShowPeers,
    ShowRoutes,
    Shutdown(String),
}

const KEYWORDS: &[&str] = &[
    "next-hop",
    "local-pref",
    "med",
    "community",
    "large-community",
];

/// A community by value or by its RFC 1997 name.
pub fn parse_community(s: &str) -> Result<Community, String> {
    match s.to_ascii_lowercase().as_str() {
        "no-export" => Ok(Community::NO_EXPORT),
        "no-advertise" => Ok(Community(0xffff_ff02)),
        "no-export-subconfed" | "local-as" => Ok(Community(0xffff_ff03)),
        _ => s.parse(),
    }
}

/// Parses one line; `Ok(None)` for blank lines and `#` comments.
pub fn parse(line: &str) -> Result<Option<Command>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let prefix = |i: usize| -> Result<Prefix, String> {
        words
            .get(i)
            .ok_or_else(|| format!("{}: missing prefix", words[0]))?
            .parse::<Prefix>()
            .map_err(|e| e.to_string())
    };
    let cmd = match words[0] {
        "announce" => {
            let p = prefix(1)?;
            let mut a = RouteAttrs::default();
            let mut i = 2;
            let value = |i: usize, what: &str| -> Result<&str, String> {
                words
                    .get(i)
                    .copied()
                    .ok_or_else(|| format!("{what} needs a value"))
            };
            while i < words.len() {
                let kw = words[i];
                match kw {
                    "next-hop" => {
                        let v = value(i + 1, kw)?;
                        a.next_hop = Some(v.parse().map_err(|_| format!("bad next-hop {v:?}"))?);
                        i += 2;
                    }
                    "local-pref" | "med" => {
                        let v = value(i + 1, kw)?;
                        let n: u32 = v.parse().map_err(|_| format!("bad {kw} {v:?}"))?;
                        if kw == "med" {
                            a.med = Some(n);
                        } else {
                            a.local_pref = Some(n);
                        }
                        i += 2;
                    }
                    "community" | "large-community" => {
                        i += 1;
                        let start = i;
                        while i < words.len() && !KEYWORDS.contains(&words[i]) {
                            if kw == "community" {
                                a.communities.push(parse_community(words[i])?);
                            } else {
                                a.large_communities
                                    .push(words[i].parse::<LargeCommunity>()?);
                            }
                            i += 1;
                        }
                        if i == start {
                            return Err(format!("{kw} needs a value"));
                        }
                    }
                    other => return Err(format!("unknown announce option {other:?}")),
                }
            }
            Command::Announce(p, a)
        }
        "withdraw" if words.len() == 2 => Command::Withdraw(prefix(1)?),
        "show" if words.get(1) == Some(&"peers") && words.len() == 2 => Command::ShowPeers,
        "show" if words.get(1) == Some(&"routes") && words.len() == 2 => Command::ShowRoutes,
        "shutdown" => Command::Shutdown(words[1..].join(" ")),
        _ => return Err(format!("unknown command {line:?}")),
    };
    Ok(Some(cmd))
}

/// The next hop of a received route, from NEXT_HOP or MP_REACH_NLRI.
fn next_hop(attrs: &[Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| match a {
        Attribute::NextHop(n) => Some(n.to_string()),
        Attribute::MpReach(m) => Some(m.next_hop.global.to_string()),
        _ => None,
    })
}

/// The JSON lines for an event: route events become one line per prefix, so that a
/// consumer can grep for a prefix.
pub fn event_lines(e: &SpeakerEvent) -> Vec<Value> {
    match e {
        SpeakerEvent::RoutesReceived {
            peer,
            nlri,
            attributes,
        } => {
            let nh = next_hop(attributes);
            let attrs: Vec<&Attribute> = attributes
                .iter()
                .filter(|a| !matches!(a, Attribute::MpReach(_)))
                .collect();
            nlri.iter()
                .map(|n| {
                    let mut v = json!({
                        "event": "route_received",
                        "peer": peer,
                        "prefix": n.prefix,
                        "next_hop": nh,
                        "attributes": attrs,
                    });
                    if let Some(id) = n.path_id {
                        v["path_id"] = json!(id);
                    }
                    v
                })
                .collect()
        }
        SpeakerEvent::RoutesWithdrawn { peer, nlri, stale } => nlri
            .iter()
            .map(|n| {
                json!({
                    "event": "route_withdrawn",
                    "peer": peer,
                    "prefix": n.prefix,
                    "stale": stale,
                })
            })
            .collect(),
        other => vec![serde_json::to_value(other).unwrap_or(Value::Null)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Nlri;
    use std::sync::Arc;

    #[test]
    fn announce_with_everything() {
        let c = parse(
            "announce 203.0.113.7/32 next-hop 192.0.2.1 local-pref 200 med 10 \
             community 65001:1 no-export large-community 65001:1:2 65001:3:4",
        )
        .unwrap()
        .unwrap();
        let Command::Announce(p, a) = c else {
            panic!("{c:?}")
        };
        assert_eq!(p.to_string(), "203.0.113.7/32");
        assert_eq!(a.next_hop, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(a.local_pref, Some(200));
        assert_eq!(a.med, Some(10));
        assert_eq!(
            a.communities,
            vec!["65001:1".parse().unwrap(), Community::NO_EXPORT]
        );
        assert_eq!(a.large_communities.len(), 2);
    }

    #[test]
    fn other_commands_and_errors() {
        assert_eq!(
            parse("withdraw 2001:db8::/48").unwrap(),
            Some(Command::Withdraw("2001:db8::/48".parse().unwrap()))
        );
        assert_eq!(parse("show peers").unwrap(), Some(Command::ShowPeers));
        assert_eq!(parse("show routes").unwrap(), Some(Command::ShowRoutes));
        assert_eq!(parse("  # note").unwrap(), None);
        assert_eq!(
            parse("shutdown going away").unwrap(),
            Some(Command::Shutdown("going away".into()))
        );
        assert!(parse("announce 10.0.0.0/8 med x").is_err());
        assert!(parse("announce 10.0.0.0/8 community").is_err());
        assert!(parse("announce 10.0.0.0/33").is_err());
        assert!(parse("announce 10.0.0.0/8 colour red").is_err());
        assert!(parse("frobnicate").is_err());
    }

    #[test]
    fn route_events_are_one_line_per_prefix() {
        let e = SpeakerEvent::RoutesReceived {
            peer: "192.0.2.2".parse().unwrap(),
            nlri: vec![
                Nlri::new("10.0.0.0/24".parse().unwrap()),
                Nlri::new("10.0.1.0/24".parse().unwrap()),
            ],
            attributes: Arc::new(vec![Attribute::NextHop("192.0.2.2".parse().unwrap())]),
        };
        let lines = event_lines(&e);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["prefix"], "10.0.1.0/24");
        assert_eq!(lines[1]["next_hop"], "192.0.2.2");
        assert_eq!(lines[0]["event"], "route_received");
    }
}
