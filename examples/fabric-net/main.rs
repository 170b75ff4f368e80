//! `cargo run --example fabric-net [PORT]`: the fabric controller the `fabric-net` example
//! service talks to, on 127.0.0.1 (default port 8788). The bearer token is
//! `$FABRIC_TOKEN`, or `fabric-demo-token`.

mod server;

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8788);
    let token = std::env::var("FABRIC_TOKEN").unwrap_or_else(|_| "fabric-demo-token".to_owned());
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    println!("fabric controller on http://127.0.0.1:{port} (Ctrl-C to stop)");
    let app = server::router(Default::default(), token);
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("server error: {e}");
        std::process::exit(1);
    }
}
