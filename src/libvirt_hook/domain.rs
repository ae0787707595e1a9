//! The part of a libvirt domain XML the hook reads: name, UUID and migroute's metadata
//! element with the VM's host routes:
//!
//! ```xml
//! <metadata>
//!   <migroute:vm xmlns:migroute="https://migroute.dev/xmlns/libvirt/1">
//!     <migroute:prefix>10.10.0.5/32</migroute:prefix>
//!   </migroute:vm>
//! </metadata>
//! ```
//!
//! set once with `virsh metadata DOMAIN --uri https://migroute.dev/xmlns/libvirt/1
//! --key migroute --set '<vm><prefix>10.10.0.5/32</prefix></vm>'`. libvirt keeps
//! metadata in the domain definition, so it migrates with the domain.

use ipnetwork::IpNetwork;
use migroute_orchestration::pe::MacAddr;
use thiserror::Error;

/// The XML namespace of migroute's domain metadata.
pub const NAMESPACE: &str = "https://migroute.dev/xmlns/libvirt/1";

/// What the hook knows about a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// `<name>`.
    pub name: String,
    /// `<uuid>`: stable across hosts, so it keys the hook's state.
    pub uuid: String,
    /// The host routes in migroute's metadata; empty when the domain has none (it does
    /// not take part).
    pub prefixes: Vec<IpNetwork>,
    /// The MAC QEMU's RARP announcement will carry: migroute's `<migroute:mac>` if
    /// given, else the first `<interface>`'s. The destination agent recognises the VM
    /// by it (a RARP has no IP address).
    pub mac: Option<MacAddr>,
}

/// Why a domain XML cannot be used.
#[derive(Debug, Error)]
pub enum DomainError {
    /// Not XML.
    #[error("domain XML: {0}")]
    Xml(#[from] roxmltree::Error),
    /// A required element is missing.
    #[error("domain XML: no <{0}> element")]
    Missing(&'static str),
    /// A prefix in migroute's metadata does not parse.
    #[error("domain {domain}: migroute metadata prefix {text:?}: {reason}")]
    BadPrefix {
        /// The domain's name.
        domain: String,
        /// The element's text.
        text: String,
        /// Why.
        reason: String,
    },
    /// The VM's MAC does not parse.
    #[error("domain {domain}: MAC {text:?}: {reason}")]
    BadMac {
        /// The domain's name.
        domain: String,
        /// The address as written.
        text: String,
        /// Why.
        reason: String,
    },
}

impl Domain {
    /// Reads the domain XML libvirt passes on the hook's stdin.
    pub fn parse(xml: &str) -> Result<Self, DomainError> {
        let doc = roxmltree::Document::parse(xml)?;
        let root = doc.root_element();
        let child_text = |tag: &'static str| {
            root.children()
                .find(|n| n.has_tag_name(tag))
                .and_then(|n| n.text())
                .map(|t| t.trim().to_owned())
                .ok_or(DomainError::Missing(tag))
        };
        let name = child_text("name")?;
        let uuid = child_text("uuid")?;
        let mut prefixes = Vec::new();
        let ours = root
            .descendants()
            .filter(|n| n.tag_name().namespace() == Some(NAMESPACE));
        for node in ours.filter(|n| n.tag_name().name() == "prefix") {
            let text = node.text().unwrap_or_default().trim().to_owned();
            let prefix: IpNetwork =
                text.parse()
                    .map_err(|e: ipnetwork::IpNetworkError| DomainError::BadPrefix {
                        domain: name.clone(),
                        text: text.clone(),
                        reason: e.to_string(),
                    })?;
            prefixes.push(prefix);
        }
        let ours_mac = root
            .descendants()
            .find(|n| n.has_tag_name((NAMESPACE, "mac")))
            .and_then(|n| n.text())
            .map(str::trim);
        let first_interface_mac = root
            .descendants()
            .filter(|n| n.has_tag_name("interface"))
            .flat_map(|i| i.children().filter(|c| c.has_tag_name("mac")))
            .find_map(|m| m.attribute("address"));
        let mac = match ours_mac.or(first_interface_mac) {
            Some(text) => Some(text.parse().map_err(
                |e: migroute_orchestration::pe::MacParseError| DomainError::BadMac {
                    domain: name.clone(),
                    text: text.to_owned(),
                    reason: e.to_string(),
                },
            )?),
            None => None,
        };
        Ok(Domain {
            name,
            uuid,
            prefixes,
            mac,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WITH: &str = r#"<domain type='kvm'>
  <name>vm1</name>
  <uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>
  <metadata>
    <other:x xmlns:other="https://example.org/x"><other:prefix>192.0.2.9/32</other:prefix></other:x>
    <migroute:vm xmlns:migroute="https://migroute.dev/xmlns/libvirt/1">
      <migroute:prefix>10.10.0.5/32</migroute:prefix>
      <migroute:prefix> 2001:db8:10::5/128 </migroute:prefix>
    </migroute:vm>
  </metadata>
  <memory unit='KiB'>131072</memory>
  <devices>
    <disk type='file' device='disk'><source file='/var/lib/libvirt/images/vm1.qcow2'/></disk>
    <interface type='bridge'><mac address='52:54:00:AB:cd:01'/><source bridge='br0'/></interface>
    <interface type='bridge'><mac address='52:54:00:ab:cd:02'/><source bridge='br1'/></interface>
  </devices>
</domain>"#;

    #[test]
    fn reads_name_uuid_and_only_our_prefixes() {
        let d = Domain::parse(WITH).unwrap();
        assert_eq!(d.name, "vm1");
        assert_eq!(d.uuid, "4dea22b3-1d52-d8f3-2516-782e98ab3fa0");
        let p: Vec<String> = d.prefixes.iter().map(|p| p.to_string()).collect();
        assert_eq!(p, ["10.10.0.5/32", "2001:db8:10::5/128"]);
        assert_eq!(d.mac, Some("52:54:00:ab:cd:01".parse().unwrap()));
    }

    #[test]
    fn our_mac_element_wins_over_the_first_interface() {
        let xml = WITH.replace(
            "</migroute:vm>",
            "<migroute:mac>52:54:00:00:00:99</migroute:mac></migroute:vm>",
        );
        let d = Domain::parse(&xml).unwrap();
        assert_eq!(d.mac, Some("52:54:00:00:00:99".parse().unwrap()));
        let bad = WITH.replace("52:54:00:AB:cd:01", "52:54:00:AB:cd");
        let e = Domain::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("vm1") && e.contains("52:54:00:AB:cd"), "{e}");
    }

    #[test]
    fn a_domain_without_metadata_has_no_prefixes() {
        let d = Domain::parse("<domain><name>x</name><uuid>u</uuid></domain>").unwrap();
        assert!(d.prefixes.is_empty());
        assert_eq!(d.mac, None);
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let bad = WITH.replace("10.10.0.5/32", "10.10.0.500/32");
        let e = Domain::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("vm1") && e.contains("10.10.0.500/32"), "{e}");
        let e = Domain::parse("<domain><uuid>u</uuid></domain>").unwrap_err();
        assert!(e.to_string().contains("<name>"), "{e}");
        assert!(matches!(Domain::parse("<domain"), Err(DomainError::Xml(_))));
    }
}
