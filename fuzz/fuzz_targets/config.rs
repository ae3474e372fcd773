//! The config loader over arbitrary text: `Config::from_toml_str` parses and
//! validates it whole and never panics; any error renders as a message.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match postern::Config::from_toml_str(text, "fuzz.toml") {
        // Both render without panicking; a loaded config's Debug redacts secrets.
        Ok(config) => drop(format!("{config:?}")),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
