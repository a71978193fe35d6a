//! A scripted DNS server for the tests that resolve names: smtp-relay's
//! direct mode (MX and A records) and smtp-server's sender checks (TXT
//! records for SPF, DKIM, DMARC and DNS blacklists, and names that never get
//! an answer, for timeouts).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, MX, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// One record of the zone.
#[derive(Clone)]
pub enum Rr {
    /// An MX record: preference and exchange ("." for a null MX).
    Mx(u16, &'static str),
    /// An A record.
    A(Ipv4Addr),
    /// A TXT record, cut into strings of 255 octets as DNS needs.
    Txt(String),
    /// No answer at all to any query for the name: the client times out.
    Silent,
}

/// Answers UDP queries from `zone` (names without the final dot, any case).
/// A name not in the zone is NXDOMAIN; a name without records of the asked
/// type gets an empty NOERROR answer; a name with [`Rr::Silent`] gets none.
pub fn dns_server<N: Into<String>>(zone: Vec<(N, Rr)>) -> SocketAddr {
    let zone: Vec<(String, Rr)> = zone
        .into_iter()
        .map(|(name, rr)| (name.into().to_ascii_lowercase(), rr))
        .collect();
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the DNS server");
    let addr = socket.local_addr().expect("the DNS server's address");
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let Some(q) = query.queries.first().cloned() else {
                continue;
            };
            let asked = q
                .name()
                .to_ascii()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            let mut reply = Message::response(query.metadata.id, OpCode::Query);
            reply.metadata.recursion_desired = query.metadata.recursion_desired;
            reply.metadata.recursion_available = true;
            reply.metadata.authoritative = true;
            reply.add_query(q.clone());
            let known: Vec<&Rr> = zone
                .iter()
                .filter(|(name, _)| *name == asked)
                .map(|(_, rr)| rr)
                .collect();
            if known.iter().any(|rr| matches!(rr, Rr::Silent)) {
                continue;
            }
            if known.is_empty() {
                reply.metadata.response_code = ResponseCode::NXDomain;
            }
            for rr in known {
                let data = match (rr, q.query_type()) {
                    (Rr::Mx(pref, host), RecordType::MX) => {
                        let exchange = if *host == "." {
                            Name::root()
                        } else {
                            Name::from_ascii(format!("{host}.")).expect("an MX host name")
                        };
                        RData::MX(MX::new(*pref, exchange))
                    }
                    (Rr::A(ip), RecordType::A) => RData::A(A(*ip)),
                    (Rr::Txt(text), RecordType::TXT) => {
                        let parts = text
                            .as_bytes()
                            .chunks(255)
                            .map(|c| String::from_utf8_lossy(c).into_owned())
                            .collect();
                        RData::TXT(TXT::new(parts))
                    }
                    _ => continue,
                };
                reply.add_answer(Record::from_rdata(q.name().clone(), 60, data));
            }
            if let Ok(bytes) = reply.to_vec() {
                let _ = socket.send_to(&bytes, from);
            }
        }
    });
    addr
}
