//! Venue connector throughput: recorded frames through parser + book-integrity state machine
//! (Kraken v1 book with a CRC32 checksum per update, Coinbase level2, HTX gzip frames), MEXC
//! protobuf decoding, and the cross-exchange COB.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mmtrader::feeds::aggregate::aggregate_cob;
use mmtrader::feeds::mexc::proto::{Body, DepthItem, PublicAggreDepths};
use mmtrader::feeds::normalized::Venue;
use mmtrader::feeds::raw_replay::{CaptureLine, Payload, parse_capture_line};
use mmtrader::feeds::venue::{Frame, Step, VenueProtocol, VenueSession};
use mmtrader::market::types::Side;

fn frames(file: &str) -> Vec<Payload> {
    let path = mmtrader::testdata::require(&format!("exchange_raw/cryptofeed_sample_data/{file}"));
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| match parse_capture_line(l).ok()? {
            CaptureLine::Received { payload, .. } => Some(payload),
            _ => None,
        })
        .collect()
}

fn replay(venue: Venue, frames: &[Payload]) -> VenueSession {
    let mut s = VenueSession::open(mmtrader::feeds::protocol_for(venue).unwrap());
    let mut step = Step::default();
    for f in frames {
        let _ = match f {
            Payload::Text(t) => s.on_frame(Frame::Text(t), &mut step),
            Payload::Binary(b) => s.on_frame(Frame::Binary(b), &mut step),
        };
        step.events.clear();
        step.actions.clear();
        step.books_changed.clear();
    }
    s
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("venues");
    for (venue, file) in [
        (Venue::Kraken, "KRAKEN.ws.50.0"),
        (Venue::Coinbase, "COINBASE.ws.28.0"),
        (Venue::Htx, "HUOBI.ws.44.0"),
    ] {
        let f = frames(file);
        g.throughput(Throughput::Elements(f.len() as u64));
        g.bench_function(format!("replay_{venue}"), |b| b.iter(|| replay(venue, &f)));
    }
    let mut p = mmtrader::feeds::mexc::MexcProtocol::default();
    let items: Vec<DepthItem> = (0..20)
        .map(|i| DepthItem {
            price: format!("2500.{i:02}"),
            quantity: "1.5".into(),
        })
        .collect();
    let push = mmtrader::feeds::mexc::protocol::encode_push(
        "ETHUSDT",
        "spot@public.aggre.depth.v3.api.pb@100ms@ETHUSDT",
        Body::PublicAggreDepths(PublicAggreDepths {
            asks: items.clone(),
            bids: items,
            event_type: String::new(),
            from_version: "10".into(),
            to_version: "11".into(),
        }),
        1,
    );
    g.throughput(Throughput::Elements(1));
    g.bench_function("mexc_depth_push_40_levels", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            out.clear();
            p.parse(Frame::Binary(&push), &mut out).unwrap();
        })
    });
    let kraken = replay(Venue::Kraken, &frames("KRAKEN.ws.50.0"));
    let book = kraken.book("BTC/CHF").unwrap().clone();
    let shifted = {
        let mut b = book.clone();
        if let Some(l) = b.best_bid() {
            b.apply_level(Side::Buy, l.price, l.qty);
        }
        b
    };
    g.bench_function("aggregate_cob_3_books", |b| {
        b.iter(|| {
            aggregate_cob(
                "BTC/CHF",
                &[
                    (Venue::Kraken, &book),
                    (Venue::Coinbase, &shifted),
                    (Venue::Bybit, &book),
                ],
                mmtrader::market::types::Price::from_units(10),
                20,
            )
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
