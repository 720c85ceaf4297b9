//! A TCP proxy on loopback that a test can make misbehave like a network:
//! go silent on the connections it carries without closing them (a dropped
//! route, a frozen peer), refuse to carry new ones, or send new ones to
//! another address (a failover). The broker behind it is never touched.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the proxy does with connections, shared with its tasks.
struct State {
    /// Where new connections go.
    upstream: SocketAddr,
    /// Cancelled to silence every connection carried so far.
    cut: CancellationToken,
    /// New connections are held open but carried nowhere.
    blackholed: bool,
    /// Silenced sockets, kept open so that no FIN or RST gives them away.
    silenced: Vec<TcpStream>,
}

pub struct Proxy {
    pub port: u16,
    state: Arc<Mutex<State>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// A proxy to `upstream` on a free loopback port.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let port = listener.local_addr().expect("bound").port();
        let state = Arc::new(Mutex::new(State {
            upstream,
            cut: CancellationToken::new(),
            blackholed: false,
            silenced: Vec::new(),
        }));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(carry(client, shared.clone()));
            }
        });
        Self {
            port,
            state,
            accept,
        }
    }

    /// Every connection carried so far goes silent; new ones are carried.
    pub fn silence_existing(&self) {
        let mut state = self.state.lock().expect("proxy state");
        state.cut.cancel();
        state.cut = CancellationToken::new();
    }

    /// The network drops everything: carried connections go silent and new
    /// ones are accepted but carried nowhere.
    pub fn blackhole(&self) {
        self.silence_existing();
        self.state.lock().expect("proxy state").blackholed = true;
    }

    /// New connections are carried again (silenced ones stay silent).
    pub fn restore(&self) {
        self.state.lock().expect("proxy state").blackholed = false;
    }

    /// New connections go to `upstream` from now on.
    pub fn redirect(&self, upstream: SocketAddr) {
        self.state.lock().expect("proxy state").upstream = upstream;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        if let Ok(mut state) = self.state.lock() {
            state.cut.cancel();
            state.silenced.clear();
        }
    }
}

/// Carries one connection until either side closes it or it is silenced.
async fn carry(mut client: TcpStream, state: Arc<Mutex<State>>) {
    let (upstream, cut, blackholed) = {
        let state = state.lock().expect("proxy state");
        (state.upstream, state.cut.clone(), state.blackholed)
    };
    if blackholed {
        state.lock().expect("proxy state").silenced.push(client);
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let silenced = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
        () = cut.cancelled() => true,
    };
    if silenced {
        let mut state = state.lock().expect("proxy state");
        state.silenced.push(client);
        state.silenced.push(server);
    }
}
