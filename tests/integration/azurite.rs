//! The Azure Storage emulator harness (`crowsnest::standin::azurite`) itself.

use crowsnest::standin::azurite::Azurite;

#[test]
fn azurite_starts_and_creates_a_container() {
    let dir = tempfile::tempdir().unwrap();
    let azurite = Azurite::start(dir.path()).expect("Azurite starts");
    assert_eq!(azurite.endpoint(), format!("http://127.0.0.1:{}/devstoreaccount1", azurite.port));
    assert!(azurite.create_container("lake").unwrap(), "a new container is created");
    assert!(!azurite.create_container("lake").unwrap(), "creating it again finds it there (409)");
}
