//! The dnsfast XDP program: answers hot A/AAAA queries from BPF maps with `XDP_TX` and passes
//! everything else up unchanged.
//!
//! This file is only the entry point: [`try_answer`] returns either `Ok` (the frame now holds the
//! answer) or a [`Verdict`] naming the counter and the action, and [`dnsfast`] maps that to an XDP
//! action. Parsing the frame is in [`parse`], the DNS work in `dnsfast_common::wire` (shared with
//! the daemon), the map lookups in [`lookup`], and the rewrite into a reply in [`respond`].
#![no_std]
#![no_main]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

mod checksum;
mod config;
mod lookup;
mod packet;
mod parse;
mod reflect;
mod respond;
mod stage;
mod stats;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use dnsfast_common::{
    maps::{CFG_ANSWER, CFG_ECS, MSG_AREA, REGION_ANY, Scratch},
    stats::Counter,
    steer::ecs_region,
    wire::{
        BuildError, Ecs, MsgBuf, QueryError, Wire, XdpEcsLimits, XdpLimits, answer_rotation,
        build_key, parse_query, plan_hot_answer,
    },
};

/// Why a packet is not answered here, and the counter that records it.
#[derive(Clone, Copy)]
pub enum Verdict {
    /// Hand the packet to the kernel stack unchanged (the daemon or someone else handles it).
    Pass(Counter),
    /// Discard the packet.
    Drop(Counter),
    /// The query carries a Client Subnet option the program honours: the main program hands it
    /// to the Client Subnet stage (`dnsfast_ecs`), which answers it.
    ClientSubnet,
}

/// Answers hot DNS queries; passes everything else.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] macro fixes the signature"
)]
pub fn dnsfast(ctx: XdpContext) -> u32 {
    stats::bump(Counter::Seen);
    let verdict = try_answer::<false>(&ctx);
    if let Err(Verdict::ClientSubnet) = verdict {
        // Returns if the resolver is not listed or the stage is missing (then the daemon
        // answers).
        lookup::to_ecs_stage(&ctx);
    }
    finish(verdict, Counter::Answered)
}

/// The Client Subnet stage: the main program's tail call for a query with the option, which
/// it answers (region from the option, the echo with its SCOPE) or passes up. Two programs
/// because one holding both paths exceeds the verifier's budget; each has its own. The main
/// program counted the packet in `seen` already.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] macro fixes the signature"
)]
pub fn dnsfast_ecs(ctx: XdpContext) -> u32 {
    finish(try_answer::<true>(&ctx), Counter::AnsweredEcs)
}

/// Counts the outcome and returns its XDP action.
#[inline(always)]
fn finish(verdict: Result<(), Verdict>, answered: Counter) -> u32 {
    let (action, counter) = match verdict {
        Ok(()) => (xdp_action::XDP_TX, answered),
        Err(Verdict::Pass(c)) => (xdp_action::XDP_PASS, c),
        Err(Verdict::Drop(c)) => (xdp_action::XDP_DROP, c),
        Err(Verdict::ClientSubnet) => (xdp_action::XDP_PASS, Counter::PassEdns),
    };
    stats::bump(counter);
    action
}

/// The benchmark's ceiling (see `reflect`): empty answers, no lookup.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] macro fixes the signature"
)]
pub fn dnsfast_reflect(ctx: XdpContext) -> u32 {
    reflect::reflect(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

/// The benchmark's second reference (see `reflect`): the ceiling plus the frame resize and move
/// that every answer with a record costs, answering one fixed A record, no lookup.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] macro fixes the signature"
)]
pub fn dnsfast_reflect_grow(ctx: XdpContext) -> u32 {
    reflect::reflect_grow(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

/// The benchmark's big-zone reference (see `reflect`): the ceiling plus one random bucket load.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] macro fixes the signature"
)]
pub fn dnsfast_reflect_miss(ctx: XdpContext) -> u32 {
    reflect::reflect_miss(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

/// The region lookup's first reference (see `reflect`): the ceiling plus one LPM-trie lookup of
/// the Client Subnet address.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] macro fixes the signature"
)]
pub fn dnsfast_reflect_lpm(ctx: XdpContext) -> u32 {
    reflect::reflect_lpm(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

/// The region lookup's second reference (see `reflect`): the ceiling plus one load, picked by
/// the Client Subnet address, from a table the size of the region tables' first level.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] macro fixes the signature"
)]
pub fn dnsfast_reflect_geo_miss(ctx: XdpContext) -> u32 {
    reflect::reflect_geo_miss(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

/// Passes every packet. Attached to the far end of a veth pair, where native XDP needs a program
/// for `XDP_TX` frames to arrive.
#[xdp]
pub fn dnsfast_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The whole answer: `ECS` is the Client Subnet stage (the option is recorded, decides a steered
/// name's region and is echoed), else the main program (the option hands the query over).
#[inline(always)]
fn try_answer<const ECS: bool>(ctx: &XdpContext) -> Result<(), Verdict> {
    let cfg = config::get().ok_or(Verdict::Pass(Counter::PassDisabled))?;
    if cfg.flags & CFG_ANSWER == 0 {
        return Err(Verdict::Pass(Counter::PassDisabled));
    }
    // The stage reads CONFIG again: the daemon may have turned ECS off since the main
    // program's look (a reload), and then the daemon decides. (A resolver list that changed
    // meanwhile is the old configuration's answer to a query that arrived before it.)
    if ECS && cfg.flags & CFG_ECS == 0 {
        return Err(Verdict::Pass(Counter::PassEdns));
    }
    let mut frame = parse::frame(ctx, cfg)?;
    stage::cut(1)?;
    let Scratch {
        cell,
        msg: area,
        key,
        hint,
        inline,
        steered,
    } = lookup::scratch().ok_or(Verdict::Pass(Counter::PassRewrite))?;

    packet::copy_in(ctx, frame.dns, frame.dns_len, area)
        .ok_or(Verdict::Pass(Counter::PassShort))?;
    // One verifier state after the copy loop, whichever iteration it ended in (the loop refined
    // what the verifier knows of the length differently in each).
    frame.dns_len = packet::launder(cell, frame.dns_len) & (MSG_AREA - 1);
    stage::cut(2)?;
    let mut msg = MsgBuf::new(area, frame.dns_len, cell);
    let q = if ECS {
        parse_query::<XdpEcsLimits, _>(&mut msg)
    } else {
        parse_query::<XdpLimits, _>(&mut msg)
    };
    let q = q.map_err(|e| query_verdict(e, cfg.flags))?;
    // The daemon takes the same decision (`Query::hot`).
    q.hot().map_err(|_| Verdict::Pass(Counter::PassNotHot))?;
    // The Client Subnet stage answers only queries with the option (the main program sent it
    // those); its echo, SCOPE set below once the answer is known.
    let mut ecs = match q.edns.and_then(|e| e.ecs) {
        Some(e) if ECS => e,
        _ if ECS => return Err(Verdict::Pass(Counter::PassEdns)),
        _ => Ecs {
            family: 0,
            source_prefix: 0,
            scope: 0,
            address: [0; 16],
        },
    };

    // The order the daemon would give this query too (and a steered answer's draw).
    let mut rotation = answer_rotation(q.id, frame.client_port);
    // From here on only what the answer depends on, laundered: one verifier state per type and
    // EDNS presence, however the validator's loops went.
    let q = q.hot_form(|v| msg.launder(v));
    stage::cut(3)?;
    // The validator's length checks narrowed the message length differently on each path.
    frame.dns_len = msg.launder(frame.dns_len) & (MSG_AREA - 1);
    let class = build_key(&mut msg, q.name_len, q.qtype, REGION_ANY, key);
    stage::cut(4)?;
    let limit = q.udp_limit();
    let plan_err = |e| match e {
        BuildError::TooBig => Verdict::Pass(Counter::PassTooBig),
        BuildError::BadSlot => Verdict::Pass(Counter::PassBadSlot),
    };
    // Nothing between the lookup and the match: code shared by both arms would let the compiler
    // test the slot's table bit a second time, which the verifier cannot tie to the first test.
    let found = lookup::Found {
        inline,
        steered,
        rotation: &mut rotation,
    };
    // A steered name's region (asked only for a steered name): the Client Subnet's when it
    // decides (RFC 7871 §7.2.1; SCOPE its block's length), else the client address's (SCOPE 0,
    // as for every answer that does not depend on the region).
    let v6 = frame.v6;
    let mut scope = 0;
    let region = || {
        if ECS
            && let Some((r, s)) =
                ecs_region(&ecs, lookup::geo_v4, |a| lookup::geo_v6(a, cfg.geo6_half))
        {
            scope = s;
            return u32::from(r);
        }
        lookup::client_region(ctx, v6, cfg)
    };
    let answer = lookup::find(cfg, class, key, found, region, |v| msg.launder(v))
        .ok_or(Verdict::Pass(Counter::PassMiss))?;
    ecs.scope = scope;
    let echo = if ECS { Some(&ecs) } else { None };
    stage::cut(5)?;
    match answer {
        lookup::Answer::Small(a) => {
            let plan = plan_hot_answer(&mut msg, &q, a, &[], echo, limit).map_err(plan_err)?;
            stage::cut(6)?;
            let work = respond::Work { area, cell, hint };
            respond::answer(ctx, &frame, work, &q, a, &plan, echo, rotation)
        }
        lookup::Answer::Large(a) => {
            let plan = plan_hot_answer(&mut msg, &q, a, &[], echo, limit).map_err(plan_err)?;
            stage::cut(6)?;
            let work = respond::Work { area, cell, hint };
            respond::answer(ctx, &frame, work, &q, a, &plan, echo, rotation)
        }
    }
}

/// The counter and action for a query the validator rejected.
#[inline(always)]
fn query_verdict(e: QueryError, flags: u32) -> Verdict {
    match e {
        QueryError::Response => Verdict::Drop(Counter::DropResponse),
        QueryError::ShortHeader => Verdict::Drop(Counter::DropShortHeader),
        // Honoured (from any resolver, or from listed ones: `to_ecs_stage` checks): the Client
        // Subnet stage answers. Off: the daemon.
        QueryError::ClientSubnet if flags & CFG_ECS != 0 => Verdict::ClientSubnet,
        QueryError::BadVersion | QueryError::ClientSubnet | QueryError::NsidRequest => {
            Verdict::Pass(Counter::PassEdns)
        }
        QueryError::Opcode
        | QueryError::NoQuestion
        | QueryError::QuestionCount
        | QueryError::Sections
        | QueryError::TooManyAdditional
        | QueryError::OtherAdditional => Verdict::Pass(Counter::PassNotHot),
        _ => Verdict::Pass(Counter::PassMalformed),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Every index is masked or checked, so no panic path survives optimisation; if one did, the
    // verifier would reject this infinite loop at load time rather than let it run.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
