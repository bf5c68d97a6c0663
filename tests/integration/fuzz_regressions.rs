//! Every input the fuzzers (`fuzz/`) ever found, replayed through the same checks they run:
//! `fuzz/regressions/TARGET/` holds the crashes (fixed since) and a few inputs worth keeping.
//! CI runs this, not the fuzzers.

use std::path::Path;

#[test]
fn every_fuzz_regression_input_passes_its_target_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let mut ran = 0;
    for (target, check) in crowsnest::fuzzing::TARGETS {
        let dir = root.join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap();
            if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
                let why = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
                panic!("{}: {}", file.display(), why.unwrap_or_default());
            }
            ran += 1;
        }
    }
    assert!(ran > 0, "no regression inputs under {}", root.display());
}
