//! The process default configuration (`Config::set_default`) as blocking
//! work outside a scope sees it (`Config::resolve_as_scope`). Its own test
//! binary: the default is process-wide.

use microsandbox::Config;

#[test]
fn resolve_as_scope_falls_back_to_the_process_default() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    Config::set_default(Config::new().home(a.path()));
    let unset = Config::new().resolve_as_scope().unwrap();
    assert_eq!(unset.root(), a.path());
    let own = Config::new().home(b.path()).resolve_as_scope().unwrap();
    assert_eq!(own.root(), b.path());
    // `resolve_self` resolves only the configuration itself.
    assert_ne!(Config::new().resolve_self().unwrap().root(), a.path());
}
