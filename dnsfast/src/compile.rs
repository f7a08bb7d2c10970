//! Compiles the configuration into what both executors answer from: the zones (for the general
//! path), the hot table (for XDP and the userspace hot path) and the steering tables (regions
//! and the answer sets of steered names).

use std::{fmt, sync::Arc, time::SystemTime};

use hickory_proto::rr::LowerName;

use crate::{
    answer::Zones,
    config::{Config, EcsPolicy, Identity},
    geoip::Database,
    hot::HotTable,
    steering,
    zone::{NamedAt, Zone, ZoneError},
};

/// One compiled configuration, swapped in whole on reload.
#[derive(Debug)]
pub struct Snapshot {
    /// Zones for the general path.
    pub zones: Zones,
    /// Hot answers for XDP and the userspace hot path.
    pub hot: HotTable,
    /// Regions and steered names.
    pub steering: steering::Compiled,
    /// CH TXT identity answers and NSID.
    pub identity: Identity,
    /// Whose Client Subnet options are honoured.
    pub ecs: EcsPolicy,
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
    // Each steered name becomes a node of the zone that holds it (the one with the longest
    // apex at or above it, as a lookup decides).
    let steering = match &cfg.steering {
        None => steering::Compiled::default(),
        Some(s) => {
            for svc in &s.services {
                let name = LowerName::new(&svc.name);
                let zone = zones
                    .iter_mut()
                    .filter(|z| z.apex.zone_of(&name))
                    .max_by_key(|z| z.apex.num_labels());
                let result = match zone {
                    Some(z) => z.add_steered(&name),
                    None => Err(format!(
                        "{} is in no configured zone: a steered name is answered with the \
                         authority of its zone",
                        svc.name
                    )),
                };
                if let Err(message) = result {
                    errors.push(ZoneError {
                        file: cfg.path.clone(),
                        line: svc.line,
                        field: "service.name".into(),
                        message,
                    });
                }
            }
            let db = match &s.geoip {
                None => None,
                Some(g) => match Database::open(&g.path) {
                    Ok(db) => Some(Arc::new(db)),
                    Err(message) => {
                        errors.push(ZoneError {
                            file: cfg.path.clone(),
                            line: g.line,
                            field: "geoip.database".into(),
                            message: format!("{}: {message}", g.path.display()),
                        });
                        None
                    }
                },
            };
            if !errors.is_empty() {
                return Err(CompileError(errors));
            }
            steering::Compiled::new(s, db)
        }
    };
    let zones = Zones::new(zones);
    let hot = HotTable::from_zones(&zones);
    Ok(Snapshot {
        zones,
        hot,
        steering,
        identity: cfg.identity.clone(),
        ecs: cfg.ecs.clone(),
        compiled_at: SystemTime::now(),
    })
}
