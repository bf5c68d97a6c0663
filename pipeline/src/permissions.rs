//! Refuses to read what any user of the host could have changed: the rules and lists decide
//! what is detected (a world-writable rule file is a way to switch detection off), and the
//! state directory holds the histories first-sighting rules trust.

use std::path::Path;

use anyhow::{bail, Result};

/// Fails when `path` (a file or a directory) is writable by every user (`chmod o+w`).
pub fn refuse_world_writable(path: &Path, what: &str) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o002 != 0 {
                bail!(
                    "{what} {} is writable by every user of this host, who could then change what Crowsnest detects or remembers: \
                     chmod o-w {}",
                    path.display(),
                    path.display()
                );
            }
        }
    }
    Ok(())
}

/// [`refuse_world_writable`] for a directory and everything directly in it.
pub fn refuse_world_writable_dir(dir: &Path, what: &str) -> Result<()> {
    refuse_world_writable(dir, what)?;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            refuse_world_writable(&e.path(), what)?;
        }
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_world_writable_file_or_directory_is_refused_and_says_how_to_fix_it() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("rule.yaml");
        std::fs::write(&file, "id: x").unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        refuse_world_writable_dir(tmp.path(), "rule directory").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = refuse_world_writable_dir(tmp.path(), "rule directory").unwrap_err().to_string();
        assert!(e.contains("writable by every user") && e.contains("chmod o-w"), "{e}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(refuse_world_writable_dir(tmp.path(), "rule directory").is_err());
    }
}
