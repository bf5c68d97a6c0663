//! Compiles `detections/rules`, `detections/lists` and `detections/hunts` into the binary, so `crowsnest` runs the
//! bundled rule pack from anywhere (`--rules DIR` loads another).

use std::fmt::Write as _;
use std::path::Path;

fn yaml_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn main() {
    // Read at run time, not with env!(): the build script's binary is reused across checkouts
    // of the same package, and one compiled in another (since deleted) checkout silently
    // bundled no rule at all.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest_dir).join("..").join("detections");
    let mut out = String::new();
    for (name, sub) in [("RULES", "rules"), ("LISTS", "lists"), ("HUNTS", "hunts")] {
        let dir = root.join(sub);
        println!("cargo:rerun-if-changed={}", dir.display());
        writeln!(out, "pub static {name}: &[(&str, &str)] = &[").unwrap();
        let files = yaml_files(&dir);
        assert!(!files.is_empty(), "no YAML files in {}: the binary would bundle no {sub}", dir.display());
        for f in files {
            println!("cargo:rerun-if-changed={}", f.display());
            let rel = format!("detections/{sub}/{}", f.file_name().unwrap().to_string_lossy());
            writeln!(out, "    ({rel:?}, include_str!({:?})),", f.canonicalize().unwrap().display().to_string()).unwrap();
        }
        writeln!(out, "];").unwrap();
    }
    std::fs::write(Path::new(&std::env::var("OUT_DIR").unwrap()).join("bundled_detections.rs"), out).unwrap();
}
