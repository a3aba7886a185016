//! A TCP proxy for tests that break connections on purpose.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

/// What the proxy's connections are told to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Signals {
    /// Bumped to close every open connection.
    cuts: u64,
    /// Bumped to stop forwarding on every open connection, keeping it open.
    freezes: u64,
    /// New connections are refused while true.
    down: bool,
}

/// A TCP proxy in front of a server: tests can cut its connections (both
/// ends closed, as a dropped network would), freeze them (kept open,
/// nothing forwarded: a silent peer), or take it down (cut, and new
/// connections refused) and up again.
#[derive(Debug)]
pub struct Proxy {
    address: SocketAddr,
    control: Arc<watch::Sender<Signals>>,
}

impl Proxy {
    /// A proxy on a free loopback port forwarding to `upstream`.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let address = listener.local_addr().expect("a local address");
        let control = Arc::new(watch::Sender::new(Signals::default()));
        let accept_control = control.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut signals = accept_control.subscribe();
                let start = *signals.borrow_and_update();
                if start.down {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let forward = async {
                        tokio::select! {
                            _ = tokio::io::copy(&mut client_read, &mut server_write) => {}
                            _ = tokio::io::copy(&mut server_read, &mut client_write) => {}
                        }
                    };
                    // Resolves to true to freeze, false to close.
                    let told = async {
                        loop {
                            if signals.changed().await.is_err() {
                                return false;
                            }
                            let now = *signals.borrow();
                            if now.cuts != start.cuts {
                                return false;
                            }
                            if now.freezes != start.freezes {
                                return true;
                            }
                        }
                    };
                    let frozen = tokio::select! {
                        () = forward => false,
                        frozen = told => frozen,
                    };
                    if frozen {
                        let _held = (client_read, client_write, server_read, server_write);
                        std::future::pending::<()>().await;
                    }
                });
            }
        });
        Proxy { address, control }
    }

    /// The proxy's address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The proxy's base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Closes every open connection.
    pub fn cut(&self) {
        self.control.send_modify(|s| s.cuts += 1);
    }

    /// Stops forwarding on every open connection, keeping them open.
    pub fn freeze(&self) {
        self.control.send_modify(|s| s.freezes += 1);
    }

    /// Closes every open connection and refuses new ones until [`Proxy::up`].
    pub fn down(&self) {
        self.control.send_modify(|s| {
            s.cuts += 1;
            s.down = true;
        });
    }

    /// Accepts connections again.
    pub fn up(&self) {
        self.control.send_modify(|s| s.down = false);
    }
}
