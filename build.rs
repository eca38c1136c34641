//! Links Debian's shared liblua into `tests/*.rs` only. The cdylib itself must stay
//! unlinked: in module mode the `lua_*` symbols come from the host interpreter.
fn main() {
    let lua54 = std::env::var_os("CARGO_FEATURE_LUA54").is_some();
    let lua53 = std::env::var_os("CARGO_FEATURE_LUA53").is_some();
    let lib = match (lua53, lua54) {
        (false, true) => "lua5.4",
        (true, false) => "lua5.3",
        _ => panic!("enable exactly one of the features `lua54` or `lua53`"),
    };
    println!("cargo:rustc-link-arg-tests=-l{lib}");
    println!("cargo:rerun-if-changed=build.rs");
}
