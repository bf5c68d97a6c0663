//! A throwaway PKI for the stand-ins: a self-signed CA and a server certificate it signed for
//! 127.0.0.1 and localhost, EC P-256, valid from a day ago for 30 days. The HTTPS stand-ins
//! serve the certificate; clients trust the CA alone (tests and `crowsnest bench --sentinel`).

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName, SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509Name, X509NameBuilder, X509NameRef, X509};

pub struct TestPki {
    /// The CA certificate (PEM): the one root a client adds.
    pub ca_pem: Vec<u8>,
    /// The server certificate (PEM), SAN IP:127.0.0.1 and DNS:localhost.
    pub cert_pem: Vec<u8>,
    /// The server key, PKCS#8 PEM.
    pub key_pem: Vec<u8>,
}

fn ec_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256 group");
    PKey::from_ec_key(EcKey::generate(&group).expect("EC key")).expect("EC key as PKey")
}

fn name(cn: &str) -> X509Name {
    let mut b = X509NameBuilder::new().expect("name builder");
    b.append_entry_by_nid(Nid::ORGANIZATIONNAME, "Crowsnest tests").expect("O");
    b.append_entry_by_nid(Nid::COMMONNAME, cn).expect("CN");
    b.build()
}

fn serial() -> Asn1Integer {
    let mut bn = BigNum::new().expect("bignum");
    bn.rand(127, MsbOption::MAYBE_ZERO, false).expect("random serial");
    bn.to_asn1_integer().expect("serial")
}

/// Version 3, a random serial, valid from now - 1 day to now + 30 days.
fn builder(subject: &X509NameRef, issuer: &X509NameRef, key: &PKey<Private>) -> X509Builder {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_secs() as i64;
    let mut b = X509::builder().expect("x509 builder");
    b.set_version(2).expect("v3");
    b.set_serial_number(&serial()).expect("serial");
    b.set_subject_name(subject).expect("subject");
    b.set_issuer_name(issuer).expect("issuer");
    b.set_pubkey(key).expect("public key");
    b.set_not_before(&Asn1Time::from_unix(now - 86_400).expect("not before")).expect("not before");
    b.set_not_after(&Asn1Time::from_unix(now + 30 * 86_400).expect("not after")).expect("not after");
    b
}

pub fn test_pki() -> TestPki {
    let ca_key = ec_key();
    let ca_name = name("Crowsnest test CA");
    let mut b = builder(&ca_name, &ca_name, &ca_key);
    b.append_extension(BasicConstraints::new().critical().ca().build().expect("basicConstraints")).expect("basicConstraints");
    b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build().expect("keyUsage")).expect("keyUsage");
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None)).expect("subjectKeyIdentifier");
    b.append_extension(ski).expect("subjectKeyIdentifier");
    b.sign(&ca_key, MessageDigest::sha256()).expect("signing the CA");
    let ca = b.build();

    let key = ec_key();
    let mut b = builder(&name("localhost"), ca.subject_name(), &key);
    b.append_extension(BasicConstraints::new().critical().build().expect("basicConstraints")).expect("basicConstraints");
    b.append_extension(KeyUsage::new().critical().digital_signature().build().expect("keyUsage")).expect("keyUsage");
    b.append_extension(ExtendedKeyUsage::new().server_auth().build().expect("extendedKeyUsage")).expect("extendedKeyUsage");
    let san =
        SubjectAlternativeName::new().ip("127.0.0.1").dns("localhost").build(&b.x509v3_context(Some(&ca), None)).expect("subjectAltName");
    b.append_extension(san).expect("subjectAltName");
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(Some(&ca), None)).expect("subjectKeyIdentifier");
    b.append_extension(ski).expect("subjectKeyIdentifier");
    let aki = AuthorityKeyIdentifier::new().keyid(false).build(&b.x509v3_context(Some(&ca), None)).expect("authorityKeyIdentifier");
    b.append_extension(aki).expect("authorityKeyIdentifier");
    b.sign(&ca_key, MessageDigest::sha256()).expect("signing the server certificate");
    let cert = b.build();

    TestPki {
        ca_pem: ca.to_pem().expect("CA PEM"),
        cert_pem: cert.to_pem().expect("certificate PEM"),
        key_pem: key.private_key_to_pem_pkcs8().expect("PKCS#8 key PEM"),
    }
}
