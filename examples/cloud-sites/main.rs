//! `cargo run --example cloud-sites [PORT]`: the cloud the `cloud-sites` example service
//! polls for availability zones and creates sites in, on 127.0.0.1 (default port 8789). The
//! bearer token is `$CLOUD_TOKEN`, or `cloud-demo-token`.

mod server;

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8789);
    let token = std::env::var("CLOUD_TOKEN").unwrap_or_else(|_| "cloud-demo-token".to_owned());
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    println!("cloud on http://127.0.0.1:{port} (Ctrl-C to stop)");
    let app = server::router(Default::default(), token);
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("server error: {e}");
        std::process::exit(1);
    }
}
