//! Links the addon the way Node expects (napi-build sets the cdylib flags).

fn main() {
    napi_build::setup();
}
