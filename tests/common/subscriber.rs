//! A small MQTT 3.1.1 subscriber for reading back what the agent publishes: a
//! background thread with a persistent session (`clean_session = false`, QoS 1),
//! reconnecting while the broker is away, acknowledging every message.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{Connect, Packet, PubAck, Subscribe};
use rumqttc::mqttbytes::QoS;

/// One message received.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// The running subscriber; stopped on drop.
pub struct Subscriber {
    got: Arc<Mutex<Vec<Received>>>,
    subscribed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Subscriber {
    /// Subscribes `client_id` to `filter` on the anonymous plain listener at `addr`
    /// and waits (bounded: 10 s) until the broker confirmed the subscription.
    pub fn start(addr: SocketAddr, client_id: &str, filter: &str) -> Subscriber {
        let got = Arc::new(Mutex::new(Vec::new()));
        let subscribed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s, st) = (got.clone(), subscribed.clone(), stop.clone());
        let id = client_id.to_string();
        let filter = filter.to_string();
        let thread = std::thread::spawn(move || {
            // Bounded: at most 10 minutes of reconnecting, then the thread gives up.
            let end = Instant::now() + Duration::from_secs(600);
            while !st.load(Ordering::SeqCst) && Instant::now() < end {
                let _ = session(addr, &id, &filter, &g, &s, &st);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let sub = Subscriber {
            got,
            subscribed,
            stop,
            thread: Some(thread),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sub.subscribed.load(Ordering::SeqCst) {
            assert!(
                Instant::now() < deadline,
                "the test subscriber could not subscribe at {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        sub
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (bounded by `limit`) until at least `n` messages arrived; returns them.
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.received();
            if got.len() >= n || Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn session(
    addr: SocketAddr,
    id: &str,
    filter: &str,
    got: &Mutex<Vec<Received>>,
    subscribed: &AtomicBool,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut out = BytesMut::new();
    let mut c = Connect::new(id);
    c.clean_session = false;
    c.keep_alive = 60;
    c.write(&mut out).map_err(std::io::Error::other)?;
    let mut sub = Subscribe::new(filter, QoS::AtLeastOnce);
    sub.pkid = 1; // MQTT requires a non-zero packet id
    sub.write(&mut out).map_err(std::io::Error::other)?;
    s.write_all(&out)?;
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        match s.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        }
        loop {
            match Packet::read(&mut buf, 1 << 20) {
                Ok(Packet::SubAck(_)) => subscribed.store(true, Ordering::SeqCst),
                Ok(Packet::Publish(p)) => {
                    got.lock().unwrap().push(Received {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                    });
                    if p.qos == QoS::AtLeastOnce {
                        let mut ack = BytesMut::new();
                        PubAck::new(p.pkid)
                            .write(&mut ack)
                            .map_err(std::io::Error::other)?;
                        s.write_all(&ack)?;
                    }
                }
                Ok(_) => {}
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => break,
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
        }
    }
    Ok(())
}
