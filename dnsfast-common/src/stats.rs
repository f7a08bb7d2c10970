//! Per-CPU counters of the XDP program (`STATS` map), in the order the daemon prints them.
//!
//! Every packet the program sees is counted once in `seen` and once in exactly one of
//! `answered`, a `pass_*` or a `drop_*` slot, so `seen` equals the sum of the others.

macro_rules! counters {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)+) => {
        /// A counter slot in `STATS`.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter {
            $($(#[$doc])* $variant,)+
        }

        /// Counter names, indexed by `Counter as usize`; used by `dnsfast status`.
        pub const COUNTER_NAMES: &[&str] = &[$($name,)+];
    };
}

counters! {
    /// Every packet the program ran on.
    Seen = "seen",
    /// Answered from the hot maps with `XDP_TX`.
    Answered = "answered",
    /// Answered with `XDP_TX` by the Client Subnet stage: a query with the option, its echo
    /// in the answer.
    AnsweredEcs = "answered_ecs",
    /// Neither IPv4 nor IPv6 (ARP, LLDP, ...).
    PassNotIp = "pass_not_ip",
    /// 802.1Q/802.1ad tagged frame.
    PassVlan = "pass_vlan",
    /// Frame too short for the headers it announces.
    PassShort = "pass_short",
    /// IPv4 with options (IHL > 5).
    PassIpOptions = "pass_ip_options",
    /// IPv4 fragment (MF set or non-zero offset).
    PassFragment = "pass_fragment",
    /// IPv6 with an extension header before the transport header.
    PassIpv6Ext = "pass_ipv6_ext",
    /// Not UDP.
    PassNotUdp = "pass_not_udp",
    /// Destination address is not one dnsfast listens on.
    PassNotOurs = "pass_not_ours",
    /// UDP destination port is not the DNS port.
    PassNotDnsPort = "pass_not_dns_port",
    /// UDP length disagrees with the IP payload length.
    PassUdpLength = "pass_udp_length",
    /// Query larger than the XDP copy buffer.
    PassTooLarge = "pass_too_large",
    /// Answering is switched off in `CONFIG` (daemon starting or `xdp = "off"`).
    PassDisabled = "pass_disabled",
    /// Not a standard query the XDP path answers (opcode, counts, class, type).
    PassNotHot = "pass_not_hot",
    /// Malformed or unusual question/EDNS: the daemon decides the rcode.
    PassMalformed = "pass_malformed",
    /// EDNS the XDP path does not answer (version > 0, NSID, Client Subnet when it is off or
    /// honoured only from listed resolvers, two Client Subnet options, or the ECS stage not in
    /// `STAGES`).
    PassEdns = "pass_edns",
    /// Name/type not in the hot maps.
    PassMiss = "pass_miss",
    /// The answer slot is not a valid answer (never written or inconsistent; should stay 0).
    PassBadSlot = "pass_bad_slot",
    /// The answer would exceed the client's UDP size.
    PassTooBig = "pass_too_big",
    /// The frame could not grow to the answer's size (neither tailroom nor headroom enough:
    /// veth leaves about 200 bytes of headroom; NIC drivers leave room in the tail).
    PassNoRoom = "pass_no_room",
    /// The reply could not be prepared (helper failure; should stay 0).
    PassRewrite = "pass_rewrite",
    /// QR=1: a response sent to us (reflection); never answered.
    DropResponse = "drop_response",
    /// DNS header shorter than 12 bytes.
    DropShortHeader = "drop_short_header",
    /// The frame was resized but could not be rewritten (should stay 0).
    DropRewrite = "drop_rewrite",
}

/// Number of counter slots.
pub const COUNTERS: usize = COUNTER_NAMES.len();

impl Counter {
    /// Index of this counter in `STATS`.
    #[inline(always)]
    #[must_use]
    pub const fn index(self) -> u32 {
        self as u32
    }
}
