//! Runs the test API server on its own, for measuring clients from the
//! outside (`tendril apply`, `kubectl`) as whole processes:
//!
//! ```sh
//! cargo run --release -p tendril-testkit --example apiserver -- /tmp/test-kubeconfig
//! ```
//!
//! It writes a kubeconfig for the server to the path given, prints the
//! server's URL, and serves until its stdin closes; then it prints how many
//! requests it received.

use std::io::BufRead;
use tendril_testkit::apiserver::ApiServer;

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!(
            "usage: apiserver KUBECONFIG_PATH (the kubeconfig for the server is written there)"
        );
        std::process::exit(2);
    };
    let server = ApiServer::start();
    if let Err(e) = server.write_kubeconfig(std::path::Path::new(&path)) {
        eprintln!(
            "cannot write the kubeconfig to {}: {e}",
            path.to_string_lossy()
        );
        std::process::exit(1);
    }
    println!("{}", server.url());
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
    }
    println!("requests received: {}", server.requests_received());
}
