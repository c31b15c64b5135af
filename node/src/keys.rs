//! Key files: `validator_key.json` (signs votes and proposals) and `node_key.json` (the node's
//! network identity). JSON with hex fields, mode 0600, never overwritten without `--force`, and
//! refused with a clear message when their permissions or contents are wrong.

use crate::error::{CliError, CliResult};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use tendr_core::crypto::{PrivateKey, PublicKey};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub address: String,
    pub pub_key: String,
    pub priv_key: String,
}

impl KeyFile {
    pub fn of(key: &PrivateKey) -> Self {
        KeyFile {
            address: key.address().to_string(),
            pub_key: hex::encode(key.public_key().0),
            priv_key: hex::encode(key.to_bytes()),
        }
    }
}

/// A fresh key from the operating system's randomness.
pub fn generate() -> CliResult<PrivateKey> {
    let mut seed = [0u8; 64];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(|e| CliError::failure(format!("cannot read /dev/urandom for a new key: {e}")))?;
    Ok(PrivateKey::from_seed(&seed))
}

/// Writes a key file with mode 0600. Refuses to replace an existing file unless `force`.
pub fn write(path: &Path, key: &PrivateKey, force: bool) -> CliResult<()> {
    if path.exists() && !force {
        return Err(exists_error(path));
    }
    let text = serde_json::to_string_pretty(&KeyFile::of(key)).expect("key file serialises");
    write_private(path, &text)
        .map_err(|e| CliError::failure(format!("key file `{}`: cannot write it: {e}", path.display())))
}

/// Writes `text` (and a newline) to `path` with mode 0600, atomically: a temporary file,
/// fsynced, renamed over `path`, then the folder fsynced.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

pub fn exists_error(path: &Path) -> CliError {
    CliError::input(format!(
        "key file `{}` already exists; refusing to overwrite a key (a lost validator key cannot be recovered). \
         Use a fresh folder, or pass --force to replace it",
        path.display()
    ))
}

/// Reads and checks a key file: owner-only permissions, valid key, matching public key and
/// address.
pub fn read(path: &Path, what: &str) -> CliResult<PrivateKey> {
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CliError::input(format!(
                "{what} file `{}` is missing: run `tendr init --config FILE` (genesis node) or \
                 `tendr join --config FILE --genesis genesis.json` (other nodes) to create it",
                path.display()
            ))
        } else {
            CliError::input(format!("{what} file `{}`: cannot read it: {e}", path.display()))
        }
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CliError::input(format!(
            "{what} file `{}` has permissions {mode:04o}; a key must be readable by its owner only: run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    let text = crate::config::read_file(what, path)?;
    let kf: KeyFile = crate::config::parse_json(what, path, &text)?;
    let bad = |field: &str, msg: String| {
        CliError::input(format!(
            "{what} file `{}`: field `{field}`: {msg}; restore the file from your backup",
            path.display()
        ))
    };
    let bytes = hex::decode(kf.priv_key.trim_start_matches("0x"))
        .map_err(|e| bad("priv_key", format!("not hex ({e}); expected 64 hex digits")))?;
    let key = PrivateKey::from_bytes(&bytes).map_err(|_| {
        bad(
            "priv_key",
            "not a valid secp256k1 private key (expected 64 hex digits)".into(),
        )
    })?;
    let pk = PublicKey::from_hex(kf.pub_key.trim_start_matches("0x"))
        .map_err(|e| bad("pub_key", format!("not a public key ({e})")))?;
    if pk != key.public_key() {
        return Err(bad("pub_key", "does not belong to `priv_key`".into()));
    }
    if kf.address != key.address().to_string() {
        return Err(bad(
            "address",
            format!(
                "`{}` does not belong to the key; expected `{}`",
                kf.address,
                key.address()
            ),
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("validator_key.json");
        let k = generate().unwrap();
        write(&p, &k, false).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(read(&p, "validator key").unwrap().to_bytes(), k.to_bytes());
        let before = std::fs::read(&p).unwrap();
        let e = write(&p, &generate().unwrap(), false).unwrap_err();
        assert!(e.message.contains("already exists"), "{}", e.message);
        assert_eq!(std::fs::read(&p).unwrap(), before);

        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read(&p, "validator key").unwrap_err();
        assert!(
            e.message.contains("permissions 0644") && e.message.contains("chmod 600"),
            "{}",
            e.message
        );

        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut kf = KeyFile::of(&k);
        kf.address = "0x00".into();
        std::fs::write(&p, serde_json::to_string(&kf).unwrap()).unwrap();
        let e = read(&p, "validator key").unwrap_err();
        assert!(e.message.contains("field `address`"), "{}", e.message);

        std::fs::write(&p, "{\"priv_key\": 5}").unwrap();
        let e = read(&p, "validator key").unwrap_err();
        assert!(e.message.contains("field `priv_key`"), "{}", e.message);

        let e = read(&dir.path().join("none.json"), "node key").unwrap_err();
        assert!(e.message.contains("is missing"), "{}", e.message);
    }
}
