//! The steered workloads' queries, each with its own Client Subnet option, for the bench's
//! generator (`loadgen`): subnets drawn from a GeoIP database's networks with a fixed seed.
//!
//! - `steered`: every query a new subnet, each drawn uniformly over the database's networks (a
//!   network at random, then an address in it), cut to /24 (IPv4) or /56 (IPv6) as resolvers
//!   send them;
//! - `steered-few`: 1,000 such subnets, each query picking one with Zipf's law (s = 1.0), as a
//!   real resolver population looks;
//! - `steered-one`: one subnet of each family, the lookup's paths always cached;
//! - the same packets as `steered` for another name (`hot-ecs`).
//!
//! Queries alternate IPv4 and IPv6 options and, independently, A and AAAA (1:1 each).

use std::{net::IpAddr, path::Path};

use anyhow::{Context as _, Result, ensure};

/// A GeoIP database's networks: (first address, prefix length) per family.
pub struct Networks {
    v4: Vec<(u32, u8)>,
    v6: Vec<(u128, u8)>,
}

impl Networks {
    /// Every network of the database at `path` that has data.
    ///
    /// # Errors
    /// The file is missing or not a MaxMind DB.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        let reader = maxminddb::Reader::from_source(bytes)
            .with_context(|| format!("{} is not a MaxMind DB", path.display()))?;
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for item in reader.networks(maxminddb::WithinOptions::default())? {
            let item = item?;
            if item.offset().is_none() {
                continue;
            }
            let net = item.network()?;
            match net.network() {
                IpAddr::V4(a) => v4.push((u32::from(a), net.prefix())),
                IpAddr::V6(a) => v6.push((u128::from(a), net.prefix())),
            }
        }
        ensure!(
            !v4.is_empty() && !v6.is_empty(),
            "{}: networks of both families expected",
            path.display()
        );
        Ok(Self { v4, v6 })
    }

    /// Networks of each family.
    pub fn counts(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }
}

/// A fixed-seed xorshift generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    #[expect(clippy::cast_possible_truncation, reason = "below n")]
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    #[expect(clippy::cast_precision_loss, reason = "53 random bits")]
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A Client Subnet as the option carries it: FAMILY, SOURCE and the address bytes.
#[derive(Clone, Copy)]
enum Subnet {
    V4([u8; 3]),
    V6([u8; 7]),
}

/// The /24 or /56 of an address drawn uniformly in a network drawn uniformly; `v6` picks the
/// family.
fn draw(nets: &Networks, rng: &mut Rng, v6: bool) -> Subnet {
    if v6 {
        let (start, len) = nets.v6[rng.below(nets.v6.len())];
        let host = u128::from(rng.next()) << 64 | u128::from(rng.next());
        let mask = u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
        let b = (start | (host & mask)).to_be_bytes();
        Subnet::V6([b[0], b[1], b[2], b[3], b[4], b[5], b[6]])
    } else {
        let (start, len) = nets.v4[rng.below(nets.v4.len())];
        #[expect(clippy::cast_possible_truncation, reason = "32 random bits")]
        let host = rng.next() as u32;
        let mask = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
        let b = (start | (host & mask)).to_be_bytes();
        Subnet::V4([b[0], b[1], b[2]])
    }
}

/// A query for `name` (dotted, no trailing dot), type `qtype`, with EDNS (1232 bytes) and
/// `subnet`'s Client Subnet option last; ID 0 (the generator sets it), RD clear.
fn query(name: &str, qtype: u16, subnet: Subnet) -> Vec<u8> {
    let mut q = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1];
    for label in name.split('.') {
        #[expect(clippy::cast_possible_truncation, reason = "labels of our own names")]
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    let (family, source, addr): (u16, u8, &[u8]) = match &subnet {
        Subnet::V4(a) => (1, 24, a),
        Subnet::V6(a) => (2, 56, a),
    };
    #[expect(clippy::cast_possible_truncation, reason = "at most 7 bytes")]
    let opt_len = 4 + addr.len() as u16;
    // OPT: root owner, type 41, UDP size 1232, TTL 0, RDLENGTH.
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0]);
    q.extend_from_slice(&(4 + opt_len).to_be_bytes());
    q.extend_from_slice(&[0, 8]);
    q.extend_from_slice(&opt_len.to_be_bytes());
    q.extend_from_slice(&family.to_be_bytes());
    q.extend_from_slice(&[source, 0]);
    q.extend_from_slice(addr);
    q
}

/// The query types in turn: A, A, AAAA, AAAA (with the families alternating, each pairing 1:4).
fn qtype(i: usize) -> u16 {
    if i & 2 == 0 { 1 } else { 28 }
}

/// `n` queries for `name`, each with a subnet of its own (`steered`).
pub fn uniform(nets: &Networks, name: &str, n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed | 1);
    (0..n)
        .map(|i| query(name, qtype(i), draw(nets, &mut rng, i & 1 == 1)))
        .collect()
}

/// `n` queries for `name` over `subnets` subnets (half of each family), subnet `k` (from 0)
/// picked with probability proportional to 1 / (k + 1) (`steered-few`).
pub fn zipf(nets: &Networks, name: &str, n: usize, subnets: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed | 1);
    let pool: Vec<Subnet> = (0..subnets)
        .map(|k| draw(nets, &mut rng, k & 1 == 1))
        .collect();
    #[expect(clippy::cast_precision_loss, reason = "small ranks")]
    let weights: Vec<f64> = (0..subnets).map(|k| 1.0 / (k + 1) as f64).collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(subnets);
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cdf.push(acc);
    }
    (0..n)
        .map(|i| {
            let u = rng.unit();
            let k = cdf.partition_point(|&c| c < u).min(subnets - 1);
            query(name, qtype(i), pool[k])
        })
        .collect()
}

/// `n` queries for `name` over one subnet of each family, in turn (`steered-one`: every table
/// path the lookup takes stays cached).
pub fn one_each(nets: &Networks, name: &str, n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed | 1);
    let pool = [draw(nets, &mut rng, false), draw(nets, &mut rng, true)];
    (0..n).map(|i| query(name, qtype(i), pool[i & 1])).collect()
}

/// `queries` with `from`'s name (the same length) replaced by `to` (`hot-ecs`: the same
/// packets for another name).
pub fn renamed(queries: &[Vec<u8>], from: &str, to: &str) -> Vec<Vec<u8>> {
    assert_eq!(from.len(), to.len(), "names of one length");
    queries
        .iter()
        .map(|q| {
            let mut q = q.clone();
            // The question name starts at 12 with its first label's length.
            let first = from.split('.').next().unwrap_or_default();
            let to_first = to.split('.').next().unwrap_or_default();
            assert_eq!(first.len(), to_first.len(), "first labels of one length");
            assert_eq!(
                &to[first.len()..],
                &from[first.len()..],
                "only the first label differs"
            );
            q[13..13 + first.len()].copy_from_slice(to_first.as_bytes());
            q
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_ends_with_its_client_subnet_option() {
        let q = query(
            "geo.steer.example",
            28,
            Subnet::V6([0x20, 1, 0x0d, 0xb8, 1, 2, 3]),
        );
        // Header, question, OPT with one option.
        assert_eq!(&q[..12], &[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1]);
        let tail = &q[q.len() - 15..];
        assert_eq!(
            tail,
            &[0, 8, 0, 11, 0, 2, 56, 0, 0x20, 1, 0x0d, 0xb8, 1, 2, 3]
        );
        let q = query("geo.steer.example", 1, Subnet::V4([81, 2, 3]));
        assert_eq!(&q[q.len() - 11..], &[0, 8, 0, 7, 0, 1, 24, 0, 81, 2, 3]);
        // RDLENGTH covers the option.
        assert_eq!(&q[q.len() - 13..q.len() - 11], &[0, 11]);
        let m = hickory_proto::op::Message::from_vec(&q).expect("a well-formed query");
        assert_eq!(m.queries[0].name().to_ascii(), "geo.steer.example.");
        assert_eq!(
            m.edns.as_ref().map(hickory_proto::op::Edns::max_payload),
            Some(1232)
        );
    }
}
