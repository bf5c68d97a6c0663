#![no_main]
// The check lives in crowsnest::fuzzing, where the regression test replays it.
libfuzzer_sys::fuzz_target!(|data: &[u8]| crowsnest::fuzzing::urls(data));
