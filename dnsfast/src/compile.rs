//! Compiles the configuration into what both executors answer from: the zones (for the general
//! path) and the hot table (for XDP and the userspace hot path).
//!
//! Steering will add its stage here: policies and health state turn into per-region hot
//! answers; the output shape (`Snapshot`) and its consumers stay as they are.

use std::{fmt, time::SystemTime};

use crate::{
    answer::Zones,
    config::{Config, Identity},
    hot::HotTable,
    zone::{NamedAt, Zone, ZoneError},
};

/// One compiled configuration, swapped in whole on reload.
#[derive(Debug)]
pub struct Snapshot {
    /// Zones for the general path.
    pub zones: Zones,
    /// Hot answers for XDP and the userspace hot path.
    pub hot: HotTable,
    /// CH TXT identity answers and NSID.
    pub identity: Identity,
    /// When it was compiled.
    pub compiled_at: SystemTime,
}

/// Every zone that failed to load.
#[derive(Debug)]
pub struct CompileError(pub Vec<ZoneError>);

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CompileError {}

/// Loads every zone of `cfg` and compiles the hot table. All zone errors are reported, not just
/// the first.
pub fn compile(cfg: &Config) -> Result<Snapshot, CompileError> {
    let mut zones = Vec::new();
    let mut errors = Vec::new();
    for z in &cfg.zones {
        // A missing or unreadable file is fixed in the configuration: point at its `file` key.
        let at = NamedAt {
            file: &cfg.path,
            line: z.line,
            field: "zone.file",
        };
        match Zone::load_named_at(&z.origin, &z.file, at) {
            Ok(zone) => zones.push(zone),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(CompileError(errors));
    }
    let zones = Zones::new(zones);
    let hot = HotTable::from_zones(&zones);
    Ok(Snapshot {
        zones,
        hot,
        identity: cfg.identity.clone(),
        compiled_at: SystemTime::now(),
    })
}
