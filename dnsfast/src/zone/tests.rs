use std::io::Write as _;

use hickory_proto::{rr::rdata::TXT, serialize::binary::BinEncodable as _};

use super::*;

fn origin() -> Name {
    Name::from_ascii("example.com.").unwrap()
}

fn read(text: &str) -> Result<Vec<SourceRecord>, ZoneError> {
    read_text(text, Path::new("test.zone"), &origin())
}

fn build(text: &str) -> Result<Zone, ZoneError> {
    Zone::build(&origin(), Path::new("test.zone"), read(text)?)
}

const HEAD: &str = "$TTL 300\n@ IN SOA ns1 hostmaster ( 1 ; serial\n  7200 3600 1209600 60 )\n  IN NS ns1\nns1 IN A 198.18.0.53\n";

#[test]
fn reads_the_usual_syntax() {
    let text = format!(
        "{HEAD}www 60 IN A 198.18.0.1\n    IN AAAA 2001:2::1 ; same owner\nWWW2 IN 120 A 198.18.0.2\n\
         txt TXT \"v=spf1 -all\" \"second; string\"\nmail MX 10 mx.example.net.\n\
         alias CNAME www\n$ORIGIN sub.example.com.\nhost A 198.18.1.1\n"
    );
    let recs = read(&text).unwrap();
    let find = |name: &str, t: RecordType| {
        recs.iter()
            .find(|r| {
                r.record.name.to_ascii().eq_ignore_ascii_case(name) && r.record.record_type() == t
            })
            .unwrap_or_else(|| panic!("{name} {t} missing"))
    };
    let www = find("www.example.com.", RecordType::A);
    assert_eq!((www.record.ttl, www.line), (60, 6));
    let v6 = find("www.example.com.", RecordType::AAAA);
    assert_eq!(v6.record.ttl, 300, "no TTL on the record: $TTL applies");
    assert_eq!(find("WWW2.example.com.", RecordType::A).record.ttl, 120);
    let RData::TXT(strings) = &find("txt.example.com.", RecordType::TXT).record.data else {
        panic!()
    };
    assert_eq!(
        *strings,
        TXT::new(vec!["v=spf1 -all".into(), "second; string".into()])
    );
    let RData::CNAME(c) = &find("alias.example.com.", RecordType::CNAME).record.data else {
        panic!()
    };
    assert_eq!(c.0.to_ascii(), "www.example.com.");
    find("host.sub.example.com.", RecordType::A);
    let RData::SOA(soa) = &find("example.com.", RecordType::SOA).record.data else {
        panic!()
    };
    assert_eq!(soa.mname.to_ascii(), "ns1.example.com.");
    assert_eq!(soa.minimum, 60);
}

#[test]
fn character_strings_decode_escapes() {
    let recs =
        read("$TTL 60\nt TXT \"q \\\" b \\\\ d \\065\\066 s ; t\\009e\" unquoted\\032word \"\"\n")
            .unwrap();
    let RData::TXT(t) = &recs[0].record.data else {
        panic!("TXT")
    };
    let strings: Vec<&[u8]> = t.txt_data.iter().map(AsRef::as_ref).collect();
    assert_eq!(
        strings,
        [&b"q \" b \\ d AB s ; t\x09e"[..], b"unquoted word", b""]
    );
    let max = format!("$TTL 60\nt TXT \"{}\"\n", "x".repeat(255));
    assert!(read(&max).is_ok());
    let over = format!("$TTL 60\nt TXT \"{}\"\n", "x".repeat(256));
    let e = read(&over).unwrap_err();
    assert_eq!((e.line, e.field.as_str()), (2, "rdata"), "{e}");
    assert!(e.message.contains("255"), "{e}");
    let e = read("$TTL 60\nt TXT \"\\256\"\n").unwrap_err();
    assert!(e.message.contains("above 255"), "{e}");
}

#[test]
fn generic_and_unknown_types() {
    let recs = read("$TTL 60\na TYPE65400 \\# 3 01 0203\nb A \\# 4 C6120001\n").unwrap();
    assert_eq!(recs[0].record.record_type(), RecordType::Unknown(65400));
    assert_eq!(
        recs[1].record.data,
        RData::A(A(Ipv4Addr::new(198, 18, 0, 1)))
    );
    let e = read("$TTL 60\na TYPE65400 \\# 4 01 0203\n").unwrap_err();
    assert_eq!((e.line, e.field.as_str()), (2, "rdata"), "{e}");
    // Empty data is legal and encodes as RDLENGTH 0.
    let recs = read("$TTL 60\ne TYPE65401 \\# 0\n").unwrap();
    let wire = recs[0].record.to_bytes().unwrap();
    assert_eq!(&wire[wire.len() - 2..], &[0, 0], "RDLENGTH 0");
}

#[test]
fn errors_name_file_line_and_field() {
    let cases: &[(&str, usize, &str)] = &[
        ("$TTL 60\nwww A 198.18.0.300\n", 2, "rdata"),
        ("$TTL 60\n\nwww IN BOGUS 1\n", 3, "type"),
        ("www A 198.18.0.1\n", 1, "ttl"),
        ("$TTL 60\nwww CH A 198.18.0.1\n", 2, "class"),
        ("$TTL 60\n@ SOA ns1 host ( 1 2 3 4\n", 2, "syntax"),
        ("$TTL 60\nt TXT \"open\n", 2, "syntax"),
        ("$TTL 60\n$GENERATE 1-2 a A 198.18.0.$\n", 2, "directive"),
        ("$TTL 60\n  A 198.18.0.1\n", 2, "owner"),
        ("$TTL 60\nwww MX mail\n", 2, "rdata"),
        ("$TTL 60\nx AAAA 198.18.0.1\n", 2, "rdata"),
        ("$TTL 99999999999\n", 1, "directive"),
    ];
    for (text, line, field) in cases {
        let e = read(text).unwrap_err();
        assert_eq!(
            (e.line, e.field.as_str()),
            (*line, *field),
            "{text:?} gave {e}"
        );
        assert!(
            e.to_string()
                .starts_with(&format!("test.zone:{line}: {field}: ")),
            "{e}"
        );
    }
}

#[test]
fn include_with_origin_and_loops() {
    let dir = std::env::temp_dir().join(format!("dnsfast-zone-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let main = dir.join("main.zone");
    let inc = dir.join("hosts.inc");
    std::fs::File::create(&inc)
        .unwrap()
        .write_all(b"h1 A 198.18.2.1\nh2 A 198.18.2.300\n")
        .unwrap();
    std::fs::File::create(&main)
        .unwrap()
        .write_all(b"$TTL 60\n$INCLUDE hosts.inc lab.example.com.\nafter A 198.18.0.9\n")
        .unwrap();
    let e = read_file(&main, &origin()).unwrap_err();
    assert_eq!(e.file, inc);
    assert_eq!((e.line, e.field.as_str()), (2, "rdata"), "{e}");

    std::fs::File::create(&inc)
        .unwrap()
        .write_all(b"h1 A 198.18.2.1\n")
        .unwrap();
    let recs = read_file(&main, &origin()).unwrap();
    assert_eq!(recs[0].record.name.to_ascii(), "h1.lab.example.com.");
    assert_eq!(
        recs[1].record.name.to_ascii(),
        "after.example.com.",
        "origin restored after $INCLUDE"
    );

    std::fs::File::create(&inc)
        .unwrap()
        .write_all(b"$INCLUDE main.zone\n")
        .unwrap();
    let e = read_file(&main, &origin()).unwrap_err();
    assert!(e.to_string().contains("$INCLUDE loop"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A fresh directory for one test's files (tests run in parallel).
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dnsfast-zone-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::File::create(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

#[test]
fn missing_files_are_reported_where_they_are_named() {
    let dir = scratch("missing");
    let config_path = dir.join("dnsfast.toml");
    let zone = dir.join("example.com.zone");
    write(&zone, format!("{HEAD}$INCLUDE hosts.inc\n").as_bytes());
    let text = "[xdp]\nmode = \"off\"\n[[zone]]\norigin = \"example.com\"\n\
                file = \"example.com.zone\"\n[[zone]]\norigin = \"example.net\"\n\
                file = \"nonexistent.zone\"\n";
    let cfg = crate::config::Config::parse(&config_path, text).unwrap();
    let errors = crate::compile::compile(&cfg).unwrap_err().0;
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let enoent = std::io::Error::from_raw_os_error(libc::ENOENT);
    assert_eq!(
        messages,
        [
            format!(
                "{}:6: directive: cannot open {}: {enoent}",
                zone.display(),
                dir.join("hosts.inc").display()
            ),
            format!(
                "{}:8: zone.file: cannot open {}: {enoent}",
                config_path.display(),
                dir.join("nonexistent.zone").display()
            ),
        ]
    );

    // Given directly (no configuration), the file itself is named.
    let e = Zone::load(&origin(), &dir.join("nonexistent.zone")).unwrap_err();
    assert_eq!((e.line, e.field.as_str()), (0, "file"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn include_loops_and_depth_name_the_directive_and_chain() {
    let dir = scratch("chain");
    let main = dir.join("main.zone");
    write(&main, b"$TTL 60\n$INCLUDE loop1.inc\n");
    write(&dir.join("loop1.inc"), b"$INCLUDE loop2.inc\n");
    write(
        &dir.join("loop2.inc"),
        b"; back to the first\n$INCLUDE loop1.inc\n",
    );
    let e = read_file(&main, &origin()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:2: directive: $INCLUDE loop: main.zone:2 → loop1.inc:1 → loop2.inc:2 → loop1.inc",
            dir.join("loop2.inc").display()
        )
    );

    // main.zone and d1..d7.inc fill the 8 levels; d7's $INCLUDE of d8 is one too many.
    write(&main, b"$TTL 60\n$INCLUDE d1.inc\n");
    for i in 1..=8 {
        write(
            &dir.join(format!("d{i}.inc")),
            format!("$INCLUDE d{}.inc\n", i + 1).as_bytes(),
        );
    }
    let e = read_file(&main, &origin()).unwrap_err();
    assert_eq!(e.file, dir.join("d7.inc"));
    assert_eq!(
        e.to_string(),
        format!(
            "{}:1: directive: $INCLUDE nested deeper than 8: main.zone:2 → d1.inc:1 → d2.inc:1 → \
             d3.inc:1 → d4.inc:1 → d5.inc:1 → d6.inc:1 → d7.inc:1 → d8.inc",
            dir.join("d7.inc").display()
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bytes_that_are_not_utf8_are_located() {
    let dir = scratch("utf8");
    let bad = dir.join("bad.zone");
    write(&bad, b"$TTL 60\nwww A 198.18.0.1\nt TXT \"\xc3\xa9\xff\"\n");
    let e = read_file(&bad, &origin()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:3: file: byte 0xff at offset 34 (line 3, column 9) is not UTF-8; write other \
             bytes as \\DDD escapes",
            bad.display()
        )
    );
    // Inside an $INCLUDE, the included file and its line.
    let main = dir.join("main.zone");
    write(&main, b"$TTL 60\n$INCLUDE bad.zone\n");
    let e = read_file(&main, &origin()).unwrap_err();
    assert_eq!(
        (&e.file, e.line, e.field.as_str()),
        (&bad, 3, "file"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn zone_checks() {
    let z = build(&format!(
        "{HEAD}a.b.c A 198.18.0.7\nsub NS ns.sub\nns.sub A 198.18.9.9\n"
    ))
    .unwrap();
    assert_eq!(z.negative_ttl, 60);
    let ln = |s: &str| LowerName::new(&Name::from_ascii(s).unwrap());
    assert!(z.is_empty_non_terminal(&ln("b.c.example.com.")));
    assert!(z.is_empty_non_terminal(&ln("c.example.com.")));
    assert!(!z.is_empty_non_terminal(&ln("a.b.c.example.com.")));
    assert_eq!(
        z.cut_above(&ln("x.ns.sub.example.com.")),
        Some(ln("sub.example.com."))
    );
    assert_eq!(z.cut_above(&ln("www.example.com.")), None);

    let cases: &[(&str, usize, &str, &str)] = &[
        ("$TTL 60\nwww A 198.18.0.1\n", 0, "zone", "no SOA"),
        ("$TTL 60\n@ SOA ns1 h 1 2 3 4 5\n", 2, "zone", "no NS"),
        (
            &format!("{HEAD}www A 198.18.0.1\nwww CNAME x\n"),
            7,
            "type",
            "beside other data (A at line 6)",
        ),
        (
            &format!("{HEAD}www.example.net. A 198.18.0.1\n"),
            6,
            "owner",
            "outside the zone",
        ),
        (
            &format!("{HEAD}sub NS ns.sub\n"),
            6,
            "rdata",
            "glue missing",
        ),
        (
            &format!("{HEAD}www SOA ns1 h 1 2 3 4 5\n"),
            6,
            "owner",
            "not at the apex",
        ),
    ];
    for (text, line, field, msg) in cases {
        let e = build(text).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (*line, *field), "{e}");
        assert!(e.message.contains(msg), "{e}");
    }
}
