//! `uniffi-bindgen` pinned to the bindings' uniffi version (used by `bindings/generate`).
fn main() {
    uniffi::uniffi_bindgen_main()
}
