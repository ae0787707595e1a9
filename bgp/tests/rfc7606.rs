//! One test per RFC 7606 case, each with hand-written bytes: the treatment applied,
//! the field and offset reported, and the NOTIFICATION the error maps to.

use migroute_bgp::codec::{
    decode, AttrAction, Attribute, DecodeError, Decoded, Message, Notification, SessionContext,
    Update, UpdateField,
};

const ORIGIN_IGP: &[u8] = &[0x40, 1, 1, 0];
/// AS_PATH: one AS_SEQUENCE of 65001, 4-octet.
const AS_PATH: &[u8] = &[0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9];
const NEXT_HOP: &[u8] = &[0x40, 3, 4, 192, 0, 2, 1];
/// 10.0.0.0/24 and 10.0.1.0/24.
const NLRI: &[u8] = &[24, 10, 0, 0, 24, 10, 0, 1];

fn ctx() -> SessionContext {
    SessionContext::default()
}

/// A whole UPDATE from its three fields.
fn update(withdrawn: &[u8], attrs: &[&[u8]], nlri: &[u8]) -> Vec<u8> {
    let attrs: Vec<u8> = attrs.concat();
    let mut body = Vec::new();
    body.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    body.extend_from_slice(withdrawn);
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(&attrs);
    body.extend_from_slice(nlri);
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(2);
    m.extend_from_slice(&body);
    m
}

/// Offset of the first path attribute in an UPDATE without withdrawals.
const ATTRS_AT: usize = 23;

fn ok(bytes: &[u8]) -> (Decoded, Update) {
    let d = decode(bytes, &ctx()).expect("UPDATE should decode");
    let Message::Update(u) = d.message.clone() else {
        panic!("not an UPDATE")
    };
    (d, u)
}

fn reset(bytes: &[u8]) -> (DecodeError, Notification) {
    let e = decode(bytes, &ctx()).expect_err("UPDATE should reset the session");
    let n = Notification::from(&e);
    (e, n)
}

/// Asserts the single error found and the treatment.
fn one_error(d: &Decoded, field: UpdateField, offset: usize, action: AttrAction, notif: (u8, u8)) {
    assert_eq!(d.errors.len(), 1, "errors: {:?}", d.errors);
    let e = &d.errors[0];
    assert_eq!(e.field, field);
    assert_eq!(e.offset, offset);
    assert_eq!(e.action, action);
    let n = e.notification();
    assert_eq!((n.code, n.subcode), notif);
    assert_eq!(d.treatment, Some(action));
}

fn withdrawn_prefixes(u: &Update) -> Vec<String> {
    u.withdrawn.iter().map(|n| n.prefix.to_string()).collect()
}

#[test]
fn clean_update_has_no_treatment() {
    let (d, u) = ok(&update(&[], &[ORIGIN_IGP, AS_PATH, NEXT_HOP], NLRI));
    assert_eq!(d.treatment, None);
    assert!(d.errors.is_empty());
    assert_eq!(u.nlri.len(), 2);
    assert_eq!(u.attributes.len(), 3);
}

#[test]
fn attribute_flags_error_is_treat_as_withdraw() {
    // Section 3 (c): ORIGIN sent as optional transitive.
    let bad_origin: &[u8] = &[0xc0, 1, 1, 0];
    let (d, u) = ok(&update(&[], &[bad_origin, AS_PATH, NEXT_HOP], NLRI));
    one_error(
        &d,
        UpdateField::Attribute(1),
        ATTRS_AT,
        AttrAction::TreatAsWithdraw,
        (3, 4),
    );
    assert_eq!(withdrawn_prefixes(&u), ["10.0.0.0/24", "10.0.1.0/24"]);
    assert!(u.nlri.is_empty() && u.attributes.is_empty());
    // The NOTIFICATION data is the attribute as received (RFC 4271 section 6.3).
    assert_eq!(d.errors[0].notification().data.0, bad_origin);
}

#[test]
fn duplicate_attribute_is_discarded_keeping_the_first() {
    // Section 3 (g).
    let med1: &[u8] = &[0x80, 4, 4, 0, 0, 0, 1];
    let med2: &[u8] = &[0x80, 4, 4, 0, 0, 0, 2];
    let (d, u) = ok(&update(
        &[],
        &[ORIGIN_IGP, AS_PATH, NEXT_HOP, med1, med2],
        NLRI,
    ));
    let at = ATTRS_AT + ORIGIN_IGP.len() + AS_PATH.len() + NEXT_HOP.len() + med1.len();
    one_error(
        &d,
        UpdateField::Attribute(4),
        at,
        AttrAction::AttributeDiscard,
        (3, 1),
    );
    assert_eq!(u.attribute(4), Some(&Attribute::MultiExitDisc(1)));
    assert_eq!(u.nlri.len(), 2);
}

#[test]
fn duplicate_mp_reach_resets_the_session() {
    // Section 3 (g): Malformed Attribute List.
    let mp: &[u8] = &[0x80, 14, 9, 0, 1, 1, 4, 192, 0, 2, 1, 0];
    let (e, n) = reset(&update(&[], &[ORIGIN_IGP, AS_PATH, mp, mp], &[]));
    assert_eq!((n.code, n.subcode), (3, 1));
    assert_eq!(
        e.offset(),
        ATTRS_AT + ORIGIN_IGP.len() + AS_PATH.len() + mp.len()
    );
}

#[test]
fn missing_mandatory_attribute_with_nlri_is_treat_as_withdraw() {
    // Section 3 (d): no ORIGIN. Data is the missing type code.
    let (d, u) = ok(&update(&[], &[AS_PATH, NEXT_HOP], NLRI));
    let nlri_at = ATTRS_AT + AS_PATH.len() + NEXT_HOP.len();
    one_error(
        &d,
        UpdateField::Attribute(1),
        nlri_at,
        AttrAction::TreatAsWithdraw,
        (3, 3),
    );
    assert_eq!(d.errors[0].notification().data.0, [1]);
    assert_eq!(withdrawn_prefixes(&u), ["10.0.0.0/24", "10.0.1.0/24"]);
}

#[test]
fn missing_mandatory_attribute_without_nlri_is_fine() {
    // A withdrawal needs no attributes.
    let (d, u) = ok(&update(&[24, 10, 0, 0], &[], &[]));
    assert_eq!(d.treatment, None);
    assert_eq!(withdrawn_prefixes(&u), ["10.0.0.0/24"]);
}

#[test]
fn missing_next_hop_is_not_required_for_mp_reach_only() {
    // RFC 4760 section 3: NEXT_HOP only matters for the NLRI field.
    let mp: &[u8] = &[
        0x80, 14, 22, 0, 2, 1, 16, 0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0,
    ];
    // Length 22: AFI(2) SAFI(1) NHlen(1) NH(16) reserved(1) + 1 byte of NLRI (::/0).
    let (d, u) = ok(&update(&[], &[mp, ORIGIN_IGP, AS_PATH], &[]));
    assert_eq!(d.treatment, None, "{:?}", d.errors);
    assert_eq!(u.mp_reach().unwrap().nlri[0].prefix.to_string(), "::/0");
}

#[test]
fn mp_reach_next_hop_length_5_disables_the_family() {
    // Section 7.11: the NLRI cannot be located, so AFI/SAFI disable.
    let mp: &[u8] = &[0x80, 14, 12, 0, 2, 1, 5, 1, 2, 3, 4, 5, 0, 0, 0];
    let (d, u) = ok(&update(&[], &[mp, ORIGIN_IGP, AS_PATH, NEXT_HOP], NLRI));
    assert_eq!(d.treatment, Some(AttrAction::AfiSafiDisable));
    assert_eq!(d.errors[0].field, UpdateField::Attribute(14));
    assert_eq!(d.errors[0].offset, ATTRS_AT);
    let n = d.errors[0].notification();
    assert_eq!((n.code, n.subcode), (3, 9));
    assert_eq!(d.disabled_families().len(), 1);
    // IPv4 in the NLRI field is unaffected.
    assert_eq!(u.nlri.len(), 2);
    assert!(u.mp_reach().is_none());
}

#[test]
fn mp_reach_ipv6_next_hop_lengths_16_and_32_decode() {
    for (len, ll) in [(16u8, false), (32, true)] {
        let mut mp = vec![0x80, 14, 0, 0, 2, 1, len];
        mp.extend(std::iter::repeat_n(0x20, usize::from(len)));
        mp.push(0);
        mp.extend_from_slice(&[32, 0x20, 1, 0xd, 0xb8]);
        mp[2] = (mp.len() - 3) as u8;
        let (d, u) = ok(&update(&[], &[&mp, ORIGIN_IGP, AS_PATH], &[]));
        assert_eq!(d.treatment, None);
        let r = u.mp_reach().unwrap();
        assert_eq!(r.next_hop.link_local.is_some(), ll);
        assert_eq!(r.nlri[0].prefix.to_string(), "2001:db8::/32");
    }
}

#[test]
fn odd_length_communities_are_treat_as_withdraw() {
    // Section 7.8.
    let comm: &[u8] = &[0xc0, 8, 5, 0, 1, 0, 2, 9];
    let (d, u) = ok(&update(&[], &[ORIGIN_IGP, AS_PATH, NEXT_HOP, comm], NLRI));
    let at = ATTRS_AT + ORIGIN_IGP.len() + AS_PATH.len() + NEXT_HOP.len();
    one_error(
        &d,
        UpdateField::Attribute(8),
        at,
        AttrAction::TreatAsWithdraw,
        (3, 5),
    );
    assert_eq!(u.withdrawn.len(), 2);
}

#[test]
fn empty_communities_are_treat_as_withdraw() {
    let comm: &[u8] = &[0xc0, 8, 0];
    let (d, _) = ok(&update(&[], &[ORIGIN_IGP, AS_PATH, NEXT_HOP, comm], NLRI));
    assert_eq!(d.treatment, Some(AttrAction::TreatAsWithdraw));
}

#[test]
fn truncated_large_communities_are_treat_as_withdraw() {
    // RFC 8092 section 6: not a non-zero multiple of 12.
    let lc: &[u8] = &[0xc0, 32, 13, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 4];
    let (d, u) = ok(&update(&[], &[ORIGIN_IGP, AS_PATH, NEXT_HOP, lc], NLRI));
    let at = ATTRS_AT + ORIGIN_IGP.len() + AS_PATH.len() + NEXT_HOP.len();
    one_error(
        &d,
        UpdateField::Attribute(32),
        at,
        AttrAction::TreatAsWithdraw,
        (3, 5),
    );
    assert_eq!(u.withdrawn.len(), 2);
}

#[test]
fn undefined_origin_is_treat_as_withdraw() {
    // Section 7.1.
    let origin7: &[u8] = &[0x40, 1, 1, 7];
    let (d, u) = ok(&update(&[], &[origin7, AS_PATH, NEXT_HOP], NLRI));
    one_error(
        &d,
        UpdateField::Attribute(1),
        ATTRS_AT,
        AttrAction::TreatAsWithdraw,
        (3, 6),
    );
    assert_eq!(withdrawn_prefixes(&u), ["10.0.0.0/24", "10.0.1.0/24"]);
}

#[test]
fn as_path_segment_overrun_is_treat_as_withdraw() {
    // Section 7.2: a segment of 3 ASNs in 8 bytes.
    let path: &[u8] = &[0x40, 2, 6, 2, 3, 0, 0, 0xfd, 0xe9];
    let (d, _) = ok(&update(&[], &[ORIGIN_IGP, path, NEXT_HOP], NLRI));
    one_error(
        &d,
        UpdateField::Attribute(2),
        ATTRS_AT + ORIGIN_IGP.len(),
        AttrAction::TreatAsWithdraw,
        (3, 11),
    );
}

#[test]
fn as_path_zero_length_segment_is_treat_as_withdraw() {
    let path: &[u8] = &[0x40, 2, 2, 2, 0];
    let (d, _) = ok(&update(&[], &[ORIGIN_IGP, path, NEXT_HOP], NLRI));
    one_error(
        &d,
        UpdateField::Attribute(2),
        ATTRS_AT + ORIGIN_IGP.len(),
        AttrAction::TreatAsWithdraw,
        (3, 11),
    );
}

#[test]
fn nlri_prefix_length_33_resets_the_session() {
    // Section 5.3 with 3 (j): the NLRI field cannot be parsed: Invalid Network Field.
    let bytes = update(&[], &[ORIGIN_IGP, AS_PATH, NEXT_HOP], &[33, 10, 0, 0, 0, 0]);
    let (e, n) = reset(&bytes);
    assert_eq!((n.code, n.subcode), (3, 10));
    assert_eq!(
        e.offset(),
        ATTRS_AT + ORIGIN_IGP.len() + AS_PATH.len() + NEXT_HOP.len()
    );
    assert!(e.to_string().contains("NLRI"), "{e}");
}

#[test]
fn nlri_overrun_resets_the_session() {
    let (_, n) = reset(&update(&[], &[ORIGIN_IGP, AS_PATH, NEXT_HOP], &[24, 10, 0]));
    assert_eq!((n.code, n.subcode), (3, 10));
}

#[test]
fn withdrawn_prefix_length_33_resets_the_session() {
    let (e, n) = reset(&update(&[33, 1, 2, 3, 4, 5], &[], &[]));
    assert_eq!((n.code, n.subcode), (3, 10));
    assert_eq!(e.offset(), 21);
}

#[test]
fn mp_reach_ipv6_prefix_length_129_disables_the_family() {
    let mut mp = vec![0x80, 14, 0, 0, 2, 1, 16];
    mp.extend([0x20; 16]);
    mp.push(0);
    mp.push(129);
    mp.extend([0; 17]);
    mp[2] = (mp.len() - 3) as u8;
    let (d, _) = ok(&update(&[], &[&mp, ORIGIN_IGP, AS_PATH], &[]));
    assert_eq!(d.treatment, Some(AttrAction::AfiSafiDisable));
}

#[test]
fn attribute_length_overrun_is_treat_as_withdraw() {
    // Section 4: the last attribute claims more than Total Path Attribute Length.
    let med: &[u8] = &[0x80, 4, 9, 0, 0, 0, 1];
    let (d, u) = ok(&update(&[], &[ORIGIN_IGP, AS_PATH, NEXT_HOP, med], NLRI));
    let at = ATTRS_AT + ORIGIN_IGP.len() + AS_PATH.len() + NEXT_HOP.len();
    one_error(
        &d,
        UpdateField::Attribute(4),
        at,
        AttrAction::TreatAsWithdraw,
        (3, 5),
    );
    // The NLRI are still found through the total length, and withdrawn.
    assert_eq!(u.withdrawn.len(), 2);
}

#[test]
fn attribute_header_truncated_is_treat_as_withdraw() {
    // Section 4: two bytes left, fewer than an attribute header.
    let (d, u) = ok(&update(
        &[],
        &[ORIGIN_IGP, AS_PATH, NEXT_HOP, &[0x40, 1]],
        NLRI,
    ));
    let at = ATTRS_AT + ORIGIN_IGP.len() + AS_PATH.len() + NEXT_HOP.len();
    one_error(
        &d,
        UpdateField::PathAttributes,
        at,
        AttrAction::TreatAsWithdraw,
        (3, 1),
    );
    assert_eq!(u.withdrawn.len(), 2);
}

#[test]
fn next_hop_wrong_length_is_treat_as_withdraw() {
    // Section 7.3.
    let nh: &[u8] = &[0x40, 3, 5, 192, 0, 2, 1, 0];
    let (d, _) = ok(&update(&[], &[ORIGIN_IGP, AS_PATH, nh], NLRI));
    one_error(
        &d,
        UpdateField::Attribute(3),
        ATTRS_AT + ORIGIN_IGP.len() + AS_PATH.len(),
        AttrAction::TreatAsWithdraw,
        (3, 5),
    );
}

#[test]
fn atomic_aggregate_with_a_value_is_discarded() {
    // Section 7.6.
    let aa: &[u8] = &[0x40, 6, 1, 0];
    let (d, u) = ok(&update(&[], &[ORIGIN_IGP, AS_PATH, NEXT_HOP, aa], NLRI));
    assert_eq!(d.treatment, Some(AttrAction::AttributeDiscard));
    assert!(u.attribute(6).is_none());
    assert_eq!(u.nlri.len(), 2);
}

#[test]
fn aggregator_wrong_length_is_discarded() {
    // Section 7.7: 6 bytes on a 4-octet session.
    let agg: &[u8] = &[0xc0, 7, 6, 0xfd, 0xe9, 192, 0, 2, 1];
    let (d, u) = ok(&update(&[], &[ORIGIN_IGP, AS_PATH, NEXT_HOP, agg], NLRI));
    assert_eq!(d.treatment, Some(AttrAction::AttributeDiscard));
    assert_eq!(u.nlri.len(), 2);
}

#[test]
fn as4_path_on_a_4_octet_session_is_discarded() {
    // RFC 6793 section 3.
    let as4: &[u8] = &[0xc0, 17, 6, 2, 1, 0, 0, 0xfd, 0xe9];
    let (d, u) = ok(&update(&[], &[ORIGIN_IGP, AS_PATH, NEXT_HOP, as4], NLRI));
    assert_eq!(d.treatment, Some(AttrAction::AttributeDiscard));
    assert!(u.attribute(17).is_none());
}

#[test]
fn unrecognized_well_known_attribute_resets() {
    // RFC 4271 section 6.3.
    let (_, n) = reset(&update(
        &[],
        &[ORIGIN_IGP, AS_PATH, NEXT_HOP, &[0x40, 99, 0]],
        NLRI,
    ));
    assert_eq!((n.code, n.subcode), (3, 2));
}

#[test]
fn unknown_optional_transitive_is_kept_with_partial_bit() {
    let unk: &[u8] = &[0xc0, 99, 2, 0xab, 0xcd];
    let (d, u) = ok(&update(&[], &[ORIGIN_IGP, AS_PATH, NEXT_HOP, unk], NLRI));
    assert_eq!(d.treatment, None);
    let Some(Attribute::Unknown(raw)) = u.attribute(99) else {
        panic!("unknown attribute lost")
    };
    assert_eq!(raw.flags, 0xe0);
    assert_eq!(raw.value.0, [0xab, 0xcd]);
    let re = migroute_bgp::codec::encode(&Message::Update(u.clone()), &ctx()).unwrap();
    assert!(re.windows(5).any(|w| w == [0xe0, 99, 2, 0xab, 0xcd]));
}

#[test]
fn withdrawn_length_overrun_resets() {
    let mut bytes = update(&[], &[], &[]);
    bytes[19..21].copy_from_slice(&[0, 9]);
    let (e, n) = reset(&bytes);
    assert_eq!((n.code, n.subcode), (3, 1));
    assert!(e.to_string().contains("Withdrawn Routes Length"), "{e}");
}

#[test]
fn total_attribute_length_overrun_resets() {
    let mut bytes = update(&[], &[ORIGIN_IGP], &[]);
    bytes[21..23].copy_from_slice(&[0, 50]);
    let (e, n) = reset(&bytes);
    assert_eq!((n.code, n.subcode), (3, 1));
    assert!(e.to_string().contains("Total Path Attribute Length"), "{e}");
}

#[test]
fn harshest_action_wins_and_every_error_is_listed() {
    let aa: &[u8] = &[0x40, 6, 1, 0];
    let origin7: &[u8] = &[0x40, 1, 1, 7];
    let (d, u) = ok(&update(&[], &[origin7, AS_PATH, NEXT_HOP, aa], NLRI));
    assert_eq!(d.errors.len(), 2);
    assert_eq!(d.treatment, Some(AttrAction::TreatAsWithdraw));
    assert_eq!(u.withdrawn.len(), 2);
}

#[test]
fn two_octet_session_reads_two_octet_as_path() {
    let ctx2 = SessionContext {
        as4: false,
        ..SessionContext::default()
    };
    let path: &[u8] = &[0x40, 2, 6, 2, 2, 0xfd, 0xe9, 0x5b, 0xa0];
    let as4path: &[u8] = &[0xc0, 17, 6, 2, 1, 0xfa, 0x56, 0xea, 0x01];
    let d = decode(
        &update(&[], &[ORIGIN_IGP, path, NEXT_HOP, as4path], NLRI),
        &ctx2,
    )
    .unwrap();
    let Message::Update(u) = d.message else {
        panic!()
    };
    assert_eq!(d.treatment, None);
    assert_eq!(
        u.attribute(2),
        Some(&Attribute::AsPath(vec![
            migroute_bgp::codec::AsSegment::Sequence(vec![65001, 23456])
        ]))
    );
    assert_eq!(
        u.attribute(17),
        Some(&Attribute::As4Path(vec![
            migroute_bgp::codec::AsSegment::Sequence(vec![4200000001])
        ]))
    );
}

#[test]
fn treat_as_withdraw_never_fabricates_an_end_of_rib() {
    // An MP_REACH without NLRI next to a bad ORIGIN must not become an empty
    // MP_UNREACH, which a graceful-restart peer would read as End-of-RIB.
    let mp: &[u8] = &[0x80, 14, 9, 0, 1, 1, 4, 192, 0, 2, 1, 0];
    let origin7: &[u8] = &[0x40, 1, 1, 7];
    let (d, u) = ok(&update(&[], &[mp, origin7, AS_PATH], &[]));
    assert_eq!(d.treatment, Some(AttrAction::TreatAsWithdraw));
    assert!(u.attributes.is_empty(), "{:?}", u.attributes);
    assert_eq!(d.end_of_rib(), None);
}
