//! Strings from the network never reach the terminal raw: a certificate whose
//! subject carries a right-to-left override, bidi isolates, a zero-width space and
//! a C1 control (CSI) is shown with those characters escaped, in every verbosity.

mod common;
mod support;

use common::{tls_then_with, Certs, TlsThen};
use rcgen::{CertificateParams, DistinguishedName, DnType};
use support::run;

/// Characters that reorder, hide or control what a terminal shows.
const SPOOF: [char; 6] = [
    '\u{202E}', '\u{2066}', '\u{2069}', '\u{200B}', '\u{9B}', '\u{1B}',
];

#[test]
fn a_certificate_subject_with_bidi_and_control_characters_is_escaped_in_text() {
    let certs = Certs::generate();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let mut dn = DistinguishedName::new();
    let cn: String = format!(
        "hub{}gnp.exe{}{}x{}y{}[2J{}[31m",
        SPOOF[0], SPOOF[1], SPOOF[2], SPOOF[3], SPOOF[4], SPOOF[5]
    );
    dn.push(DnType::CommonName, cn.as_str());
    dn.push(
        DnType::OrganizationName,
        format!("evil{}corp", SPOOF[0]).as_str(),
    );
    params.distinguished_name = dn;
    let identity = certs.issue("spoof", params);
    let server = tls_then_with(&certs, &identity, TlsThen::Connack(0));
    let port = format!("mqtt-tls={}", server.port());
    let ca = certs.ca_pem().to_str().unwrap().to_string();
    for verbose in ["-v", "-vv"] {
        let out = run(&[
            "check",
            "127.0.0.1",
            "--profile",
            "mqtt-broker",
            "--endpoint",
            "mqtt-tls",
            "--port",
            &port,
            "--trust",
            "none",
            "--ca-file",
            &ca,
            "--timeout",
            "5s",
            "-o",
            "text",
            verbose,
        ]);
        assert!(
            out.stdout.contains("gnp.exe"),
            "{verbose}: the subject is shown: {}",
            out.all_output()
        );
        for c in SPOOF {
            assert!(
                !out.stdout.contains(c),
                "{verbose}: U+{:04X} reached the terminal raw:\n{}",
                c as u32,
                out.stdout
            );
        }
        assert!(
            out.stdout.contains("\\u{202e}"),
            "{verbose}: the override is shown escaped: {}",
            out.stdout
        );
    }
}
