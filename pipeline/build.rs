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
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("detections");
    let mut out = String::new();
    for (name, sub) in [("RULES", "rules"), ("LISTS", "lists"), ("HUNTS", "hunts")] {
        let dir = root.join(sub);
        println!("cargo:rerun-if-changed={}", dir.display());
        writeln!(out, "pub static {name}: &[(&str, &str)] = &[").unwrap();
        for f in yaml_files(&dir) {
            println!("cargo:rerun-if-changed={}", f.display());
            let rel = format!("detections/{sub}/{}", f.file_name().unwrap().to_string_lossy());
            writeln!(out, "    ({rel:?}, include_str!({:?})),", f.canonicalize().unwrap().display().to_string()).unwrap();
        }
        writeln!(out, "];").unwrap();
    }
    std::fs::write(Path::new(&std::env::var("OUT_DIR").unwrap()).join("bundled_detections.rs"), out).unwrap();
}
