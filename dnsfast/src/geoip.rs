//! GeoIP databases: where a client address is, as a country and a continent.
//!
//! A database is a MaxMind DB file read with `maxminddb`, in either schema in use:
//!
//! - MaxMind's GeoIP2 / GeoLite2 (`country.iso_code`, `continent.code`);
//! - the flat `country_code` of the `@ip-location-db/*-mmdb` packages, whose continent comes from
//!   [`continent_of`] (the continents MaxMind assigns, ISO 3166-1 codes and Kosovo's XK).
//!
//! Codes that are not a country: `EU` (Europe, no country) counts as continent EU, `AP`
//! (Asia/Pacific) as continent AS; any other code we do not know (A1, A2, O1, ZZ…) and a record
//! without a country or continent is unknown, and its clients go to the default region. The
//! registered country (where the network is registered, not where it is used) is not read.

use std::{
    collections::HashMap,
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::Deserialize;

/// The schema a database uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// MaxMind's GeoIP2 / GeoLite2: `country.iso_code`, `continent.code`.
    GeoIp2,
    /// `country_code` alone (the `@ip-location-db` packages).
    Flat,
}

impl fmt::Display for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::GeoIp2 => "GeoIP2 (country.iso_code, continent.code)",
            Self::Flat => "flat (country_code)",
        })
    }
}

/// A two-letter code (country or continent), upper case.
pub type Code = [u8; 2];

/// Where a network is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Place {
    /// ISO 3166-1 alpha-2 country (or XK), if the record names one we know.
    pub country: Option<Code>,
    /// Continent (AF, AN, AS, EU, NA, OC, SA): the record's, else the country's.
    pub continent: Option<Code>,
}

/// A code as text.
#[must_use]
pub fn code_str(c: &Code) -> &str {
    std::str::from_utf8(c).unwrap_or("??")
}

/// The seven continent codes.
pub const CONTINENTS: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

/// Countries by continent, as MaxMind assigns them (Türkiye and Cyprus as MaxMind has them:
/// AS and EU; Russia EU; Kosovo's user-assigned XK in EU).
const COUNTRIES: [(&str, &str); 7] = [
    (
        "AF",
        "AO BF BI BJ BW CD CF CG CI CM CV DJ DZ EG EH ER ET GA GH GM GN GQ GW KE KM LR LS LY MA \
         MG ML MR MU MW MZ NA NE NG RE RW SC SD SH SL SN SO SS ST SZ TD TG TN TZ UG YT ZA ZM ZW",
    ),
    ("AN", "AQ BV GS HM TF"),
    (
        "AS",
        "AE AF AM AZ BD BH BN BT CC CN GE HK ID IL IN IO IQ IR JO JP KG KH KP KR KW KZ LA LB LK \
         MM MN MO MV MY NP OM PH PK PS QA SA SG SY TH TJ TM TR TW UZ VN YE",
    ),
    (
        "EU",
        "AD AL AT AX BA BE BG BY CH CY CZ DE DK EE ES FI FO FR GB GG GI GR HR HU IE IM IS IT JE \
         LI LT LU LV MC MD ME MK MT NL NO PL PT RO RS RU SE SI SJ SK SM UA VA XK",
    ),
    (
        "NA",
        "AG AI AW BB BL BM BQ BS BZ CA CR CU CW DM DO GD GL GP GT HN HT JM KN KY LC MF MQ MS MX \
         NI PA PM PR SV SX TC TT US VC VG VI",
    ),
    (
        "OC",
        "AS AU CK CX FJ FM GU KI MH MP NC NF NR NU NZ PF PG PN PW SB TK TL TO TV UM VU WF WS",
    ),
    ("SA", "AR BO BR CL CO EC FK GF GY PE PY SR UY VE"),
];

/// The continent of a country code (upper case), if it is one we know.
#[must_use]
pub fn continent_of(country: &str) -> Option<Code> {
    if country.len() != 2 {
        return None;
    }
    COUNTRIES.iter().find_map(|(continent, list)| {
        list.split(' ')
            .any(|c| c == country)
            .then(|| code(continent).expect("two letters"))
    })
}

/// Whether `c` (upper case) is a continent code.
#[must_use]
pub fn is_continent(c: &str) -> bool {
    CONTINENTS.contains(&c)
}

fn code(s: &str) -> Option<Code> {
    let b = s.as_bytes();
    (b.len() == 2).then(|| [b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()])
}

/// The place a record's codes name (see the module's rules for EU, AP and unknown codes).
#[must_use]
pub fn place_of(country: Option<&str>, continent: Option<&str>) -> Place {
    let continent = continent
        .and_then(code)
        .filter(|c| is_continent(code_str(c)));
    let Some(cc) = country.and_then(code) else {
        return Place {
            country: None,
            continent,
        };
    };
    match code_str(&cc) {
        "EU" => Place {
            country: None,
            continent: continent.or(code("EU")),
        },
        "AP" => Place {
            country: None,
            continent: continent.or(code("AS")),
        },
        c => match continent_of(c) {
            Some(table) => Place {
                country: Some(cc),
                continent: continent.or(Some(table)),
            },
            None => Place {
                country: None,
                continent,
            },
        },
    }
}

#[derive(Deserialize)]
struct IsoCode {
    #[serde(default)]
    iso_code: Option<String>,
}

#[derive(Deserialize)]
struct ContinentCode {
    #[serde(default)]
    code: Option<String>,
}

/// A field that is a map in one schema and may be something else (a name, in some flat
/// databases) in another: anything but the map is skipped.
#[derive(Deserialize)]
#[serde(untagged)]
enum Lenient<T> {
    Map(T),
    Other(serde::de::IgnoredAny),
}

impl<T> Lenient<T> {
    fn map(&self) -> Option<&T> {
        match self {
            Self::Map(t) => Some(t),
            Self::Other(_) => None,
        }
    }
}

/// The fields of a record either schema uses; the rest is skipped.
#[derive(Deserialize)]
struct Record {
    #[serde(default)]
    country: Option<Lenient<IsoCode>>,
    #[serde(default)]
    continent: Option<Lenient<ContinentCode>>,
    #[serde(default)]
    country_code: Option<String>,
}

/// One network of a database: `start` is the address as an integer (IPv4 in the low 32 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    /// First address.
    pub start: u128,
    /// Prefix length.
    pub len: u8,
    /// Where it is.
    pub place: Place,
}

/// A database read into memory.
pub struct Database {
    /// The file.
    pub path: PathBuf,
    /// Its schema.
    pub schema: Schema,
    /// The metadata's `database_type`.
    pub database_type: String,
    /// The metadata's build time (seconds since 1970).
    pub build_epoch: u64,
    /// IPv4 networks (IPv6 databases: the IPv4 subtree), in address order.
    pub v4: Vec<Network>,
    /// IPv6 networks outside the IPv4 subtree and its aliases, in address order.
    pub v6: Vec<Network>,
    /// How long reading it took.
    pub load_time: Duration,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.path)
            .field("schema", &self.schema)
            .field("v4", &self.v4.len())
            .field("v6", &self.v6.len())
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Reads `path`; the error says what is wrong with it (not the file's name: the caller's
    /// error names the file and the key that points at it).
    pub fn open(path: &Path) -> Result<Self, String> {
        let started = Instant::now();
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
        let reader = maxminddb::Reader::from_source(bytes)
            .map_err(|e| format!("not a MaxMind DB file: {e}"))?;
        let meta = reader.metadata();
        let database_type = meta.database_type.clone();
        let build_epoch = meta.build_epoch;
        let mut schema = None;
        let mut places: HashMap<usize, Place> = HashMap::new();
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        let networks = reader
            .networks(maxminddb::WithinOptions::default())
            .map_err(|e| format!("cannot walk the networks: {e}"))?;
        for item in networks {
            let item = item.map_err(|e| format!("bad network: {e}"))?;
            let Some(offset) = item.offset() else {
                continue;
            };
            let net = item.network().map_err(|e| format!("bad network: {e}"))?;
            let place = if let Some(p) = places.get(&offset) {
                *p
            } else {
                let rec: Option<Record> = item
                    .decode()
                    .map_err(|e| format!("bad record for {net}: {e}"))?;
                let Some(rec) = rec else { continue };
                let country = rec
                    .country
                    .as_ref()
                    .and_then(Lenient::map)
                    .and_then(|c| c.iso_code.as_deref());
                let continent = rec
                    .continent
                    .as_ref()
                    .and_then(Lenient::map)
                    .and_then(|c| c.code.as_deref());
                if schema.is_none() {
                    if country.is_some() || continent.is_some() {
                        schema = Some(Schema::GeoIp2);
                    } else if rec.country_code.is_some() {
                        schema = Some(Schema::Flat);
                    }
                }
                let p = match schema {
                    Some(Schema::GeoIp2) => place_of(country, continent),
                    Some(Schema::Flat) => place_of(rec.country_code.as_deref(), None),
                    None => Place::default(),
                };
                places.insert(offset, p);
                p
            };
            let len = net.prefix();
            match net.network() {
                IpAddr::V4(a) => v4.push(Network {
                    start: u128::from(u32::from(a)),
                    len,
                    place,
                }),
                IpAddr::V6(a) => v6.push(Network {
                    start: u128::from(a),
                    len,
                    place,
                }),
            }
        }
        let Some(schema) = schema else {
            return Err(if v4.is_empty() && v6.is_empty() {
                "the database holds no networks".into()
            } else {
                "its records have neither GeoIP2's country.iso_code / continent.code nor the \
                 flat schema's country_code: not a country database"
                    .into()
            });
        };
        v4.sort_by_key(|n| n.start);
        v6.sort_by_key(|n| n.start);
        Ok(Self {
            path: path.to_path_buf(),
            schema,
            database_type,
            build_epoch,
            v4,
            v6,
            load_time: started.elapsed(),
        })
    }

    /// The database's network holding `addr` and its place (an IPv4-mapped IPv6 address is
    /// looked up as IPv4).
    #[must_use]
    pub fn lookup(&self, addr: IpAddr) -> Option<(ipnet::IpNet, Place)> {
        let (list, bits, value) = match addr.to_canonical() {
            IpAddr::V4(a) => (&self.v4, 32, u128::from(u32::from(a))),
            IpAddr::V6(a) => (&self.v6, 128, u128::from(a)),
        };
        let i = list.partition_point(|n| n.start <= value).checked_sub(1)?;
        let n = list[i];
        let end = n.start | crate::geo::host_mask(bits, n.len);
        (value <= end).then(|| (crate::geo::to_net(bits, n.start, n.len), n.place))
    }
}

/// A build time as a UTC date (`YYYY-MM-DD`).
#[must_use]
pub fn date(epoch: u64) -> String {
    // Howard Hinnant's days-to-civil, for days since 1970-01-01.
    let z = i64::try_from(epoch / 86_400).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a database of `records` (network, record as JSON) to a file of its own.
    fn craft(tag: &str, records: &[(&str, serde_json::Value)]) -> PathBuf {
        let mut w = mmdb_writer::Writer::new(format!("dnsfast-test-{tag}"));
        for (net, rec) in records {
            w.insert(net.parse::<ipnet::IpNet>().unwrap(), rec).unwrap();
        }
        let path = std::env::temp_dir().join(format!("dnsfast-{tag}-{}.mmdb", std::process::id()));
        std::fs::write(&path, w.to_bytes().unwrap()).unwrap();
        path
    }

    fn at(db: &Database, a: &str) -> Option<(String, Option<String>, Option<String>)> {
        db.lookup(a.parse().unwrap()).map(|(n, p)| {
            (
                n.to_string(),
                p.country.map(|c| code_str(&c).to_string()),
                p.continent.map(|c| code_str(&c).to_string()),
            )
        })
    }

    #[test]
    fn both_schemas_are_detected_and_read_alike() {
        use serde_json::json;
        let geoip2 = craft(
            "geoip2",
            &[
                (
                    "198.18.1.0/24",
                    json!({"country": {"iso_code": "DE", "names": {"en": "Germany"}},
                           "continent": {"code": "EU", "names": {"en": "Europe"}},
                           "registered_country": {"iso_code": "US"}}),
                ),
                ("198.18.2.0/23", json!({"continent": {"code": "AS"}})),
                (
                    "2001:2:0:a::/64",
                    json!({"country": {"iso_code": "BR"}, "continent": {"code": "SA"}}),
                ),
                (
                    "2001:2:0:b::/64",
                    json!({"registered_country": {"iso_code": "US"}}),
                ),
            ],
        );
        let flat = craft(
            "flat",
            &[
                ("198.18.1.0/24", json!({"country_code": "DE"})),
                ("198.18.2.0/23", json!({"country_code": "AP"})),
                ("2001:2:0:a::/64", json!({"country_code": "BR"})),
                ("2001:2:0:b::/64", json!({"country_code": "ZZ"})),
            ],
        );
        // A flat database whose `country` is a name, not GeoIP2's map.
        let named = craft(
            "named",
            &[(
                "198.18.1.0/24",
                json!({"country_code": "DE", "country": "Germany", "continent": "Europe"}),
            )],
        );
        let n = Database::open(&named).unwrap();
        assert_eq!(n.schema, Schema::Flat);
        assert_eq!(at(&n, "198.18.1.1").unwrap().1.as_deref(), Some("DE"));
        let _ = std::fs::remove_file(named);
        let g = Database::open(&geoip2).unwrap();
        let f = Database::open(&flat).unwrap();
        assert_eq!(g.schema, Schema::GeoIp2);
        assert_eq!(f.schema, Schema::Flat);
        for db in [&g, &f] {
            // The IPv4 networks once each (not again under the IPv4-mapped, 6to4 and Teredo
            // aliases), the IPv6 ones apart.
            assert_eq!((db.v4.len(), db.v6.len()), (2, 2), "{:?}", db.schema);
            let s = |x: &str| Some(x.to_string());
            assert_eq!(
                at(db, "198.18.1.9"),
                Some((s("198.18.1.0/24").unwrap(), s("DE"), s("EU")))
            );
            assert_eq!(at(db, "::ffff:198.18.1.9"), at(db, "198.18.1.9"));
            assert_eq!(
                at(db, "198.18.3.1"),
                Some((s("198.18.2.0/23").unwrap(), None, s("AS")))
            );
            assert_eq!(at(db, "198.18.4.1"), None);
            assert_eq!(
                at(db, "2001:2:0:a::1"),
                Some((s("2001:2:0:a::/64").unwrap(), s("BR"), s("SA")))
            );
            // Registered country only (GeoIP2), an unknown code (flat): nowhere.
            assert_eq!(
                at(db, "2001:2:0:b::1"),
                Some((s("2001:2:0:b::/64").unwrap(), None, None))
            );
        }
        let neither = craft("neither", &[("198.18.1.0/24", json!({"asn": "AS64496"}))]);
        let e = Database::open(&neither).unwrap_err();
        assert!(e.contains("neither GeoIP2's country.iso_code"), "{e}");
        std::fs::write(&neither, b"not a database").unwrap();
        let e = Database::open(&neither).unwrap_err();
        assert!(e.starts_with("not a MaxMind DB file"), "{e}");
        for p in [geoip2, flat, neither] {
            let _ = std::fs::remove_file(p);
        }
    }

    #[test]
    fn build_dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(1_781_654_400), "2026-06-17");
    }

    #[test]
    fn the_table_holds_every_country_once_and_special_codes_have_their_rules() {
        let mut all: Vec<&str> = COUNTRIES.iter().flat_map(|(_, l)| l.split(' ')).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "a country under two continents");
        assert_eq!(n, 250, "ISO 3166-1's 249 and XK");
        assert_eq!(continent_of("US"), code("NA"));
        assert_eq!(continent_of("XK"), code("EU"));
        assert_eq!(continent_of("TR"), code("AS"));
        assert_eq!(continent_of("ZZ"), None);
        let eu = place_of(Some("EU"), None);
        assert_eq!((eu.country, eu.continent), (None, code("EU")));
        assert_eq!(place_of(Some("AP"), None).continent, code("AS"));
        assert_eq!(place_of(Some("A1"), None), Place::default());
        assert_eq!(place_of(None, Some("SA")).continent, code("SA"));
        // A record's own continent wins over the table.
        let p = place_of(Some("ru"), Some("AS"));
        assert_eq!((p.country, p.continent), (code("RU"), code("AS")));
    }
}
