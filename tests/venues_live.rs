//! The desk follows cross-exchange venues live: the feed process runs against the simulator
//! (Binance protocol) plus loopback websocket servers replaying recorded Kraken and Bybit
//! sessions; the published snapshot's aggregated COB includes both venues, a venue whose
//! server dies is left out as down while the aggregate continues, and the COB and system panes
//! show the venues.

mod venues_common;

use std::sync::Arc;
use std::time::Duration;

use mmtrader::app::pipeline::{Endpoints, FeedProcess};
use mmtrader::app::venues::{VenueEndpoint, VenuesConfig};
use mmtrader::config::Config;
use mmtrader::feeds::aggregate::Skipped;
use mmtrader::feeds::health::LinkState;
use mmtrader::feeds::normalized::Venue;
use mmtrader::market::snapshot::MarketSnapshot;
use tokio::sync::watch;
use venues_common::VenueServer;

async fn wait_until(
    rx: &mut watch::Receiver<Arc<MarketSnapshot>>,
    what: &str,
    pred: impl Fn(&MarketSnapshot) -> bool,
) -> Arc<MarketSnapshot> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    loop {
        let snap = rx.borrow_and_update().clone();
        if pred(&snap) {
            return snap;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; venues {:?}; aggregates {:?}",
            snap.venues
                .iter()
                .map(|v| (v.venue, v.health.state, v.books, v.health.errors))
                .collect::<Vec<_>>(),
            snap.symbols
                .iter()
                .map(|s| s
                    .agg_cob
                    .as_ref()
                    .map(|a| (a.quotes.len(), a.skipped.clone())))
                .collect::<Vec<_>>()
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
    }
}

fn included(snap: &MarketSnapshot, symbol: usize) -> Vec<Venue> {
    snap.symbols[symbol]
        .agg_cob
        .as_ref()
        .map(|a| a.quotes.iter().map(|q| q.venue).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aggregated_cob_follows_live_venues_and_survives_losing_one() {
    // Kraken's recording has ETH/CHF and XBT/CHF books, Bybit's ETHUSDT: the quote mapping
    // points Kraken at the CHF pairs, as a USD venue would be pointed at USD ones.
    let kraken = VenueServer::start("KRAKEN.ws.50.0").await;
    let bybit = VenueServer::start("BYBIT.ws.25.0").await;
    let mut cfg = Config::default();
    cfg.reconnect.initial_backoff_ms = 100;
    cfg.reconnect.max_backoff_ms = 300;
    cfg.data.backfill_frames = 50;
    cfg.venues = VenuesConfig {
        follow: vec!["kraken".into(), "bybit".into()],
        // The recordings end after 31 s; keep their books fresh for the whole test.
        stale_after_ms: 600_000,
        ..VenuesConfig::default()
    };
    cfg.venues.endpoints.insert(
        "kraken".into(),
        VenueEndpoint {
            ws: Some(kraken.url.clone()),
            rest: Some("http://127.0.0.1:9".into()),
            quotes: [("USDT".to_string(), "CHF".to_string())].into(),
        },
    );
    cfg.venues.endpoints.insert(
        "bybit".into(),
        VenueEndpoint {
            ws: Some(bybit.url.clone()),
            rest: Some("http://127.0.0.1:9".into()),
            quotes: Default::default(),
        },
    );
    let sim_cfg = mmtrader::app::sim::sim_config(&cfg, "127.0.0.1:0").unwrap();
    let sim = mmtrader::sim::start(sim_cfg).await.unwrap();
    let endpoints = Endpoints::of_sim(&sim, "sim");
    let (mut feed, mut rx) = FeedProcess::new(cfg.clone(), endpoints);
    feed.start().unwrap();

    // ETH/USDT: the simulator's book plus Kraken's and Bybit's; BTC/USDT: Kraken only (Bybit's
    // recording has no BTCUSDT, so it has no book there and says so).
    let snap = wait_until(&mut rx, "both venues in the aggregate", |s| {
        included(s, 0) == [Venue::Binance, Venue::Kraken, Venue::Bybit]
            && included(s, 1).contains(&Venue::Kraken)
            && !s.symbols[0].heatmap.is_empty()
    })
    .await;
    let btc = snap.symbols[1].agg_cob.as_ref().unwrap();
    assert!(
        btc.skipped.contains(&(Venue::Bybit, Skipped::NoBook)),
        "{:?}",
        btc.skipped
    );
    let eth = snap.symbols[0].agg_cob.as_ref().unwrap();
    assert_eq!(eth.buckets.len(), 2 * cfg.venues.half_buckets + 1);
    // Every bucket is the exact sum of its venues' contributions.
    for b in &eth.buckets {
        let bid: i64 = b.contributions.iter().map(|c| c.bid_qty.raw()).sum();
        assert_eq!(b.bid_qty.raw(), bid);
    }
    assert_eq!(snap.venues.len(), 2);
    for v in &snap.venues {
        assert_eq!(v.health.state, LinkState::Connected, "{:?}", v.venue);
        assert_eq!(v.integrity_failures, 0, "{:?}", v.venue);
    }
    assert_eq!((snap.venues[0].books, snap.venues[0].instruments), (2, 2));
    assert_eq!((snap.venues[1].books, snap.venues[1].instruments), (1, 2));
    // Venue trades never reach the desk's candles: those come from the simulator alone.
    assert!(snap.venues[1].trades > 0);

    let theme = mmtrader::tui::theme::Theme::load("dark", None, true).unwrap();
    let cob = mmtrader::tui::fixture::render_text(80, 24, |f| {
        mmtrader::tui::panes::heatmap::render(f, f.area(), &snap.symbols[0], &theme, true)
    });
    assert!(cob.contains("3 venues"), "{cob}");
    for name in ["agg mid", "binance", "kraken", "bybit"] {
        assert!(cob.contains(name), "COB pane lacks {name}:\n{cob}");
    }

    // Kraken's server dies: Kraken is left out as down; the aggregate goes on without it.
    kraken.kill();
    let snap = wait_until(&mut rx, "kraken left out as down", |s| {
        s.symbols[0]
            .agg_cob
            .as_ref()
            .is_some_and(|a| a.skipped.contains(&(Venue::Kraken, Skipped::Down)))
            && included(s, 0) == [Venue::Binance, Venue::Bybit]
    })
    .await;
    assert_ne!(snap.venues[0].health.state, LinkState::Connected);
    assert_eq!(snap.venues[0].books, 0);
    // A later second still aggregates (the desk's book and Bybit's).
    let t = snap.time_ms;
    let later = wait_until(&mut rx, "a later aggregate", |s| {
        s.time_ms > t + 1_500 && included(s, 0) == [Venue::Binance, Venue::Bybit]
    })
    .await;
    let cob = mmtrader::tui::fixture::render_text(80, 24, |f| {
        mmtrader::tui::panes::heatmap::render(f, f.area(), &later.symbols[0], &theme, true)
    });
    assert!(cob.contains("kraken   down"), "{cob}");
    let desk = mmtrader::tui::desk::DeskStatus::default();
    let system = mmtrader::tui::fixture::render_text(80, 24, |f| {
        mmtrader::tui::panes::system::render(f, f.area(), &later, &desk, &theme, true)
    });
    assert!(
        system.contains("kraken ws") && system.contains("retrying"),
        "{system}"
    );
    assert!(
        system.contains("bybit ws") && system.contains("books 1/2"),
        "{system}"
    );

    feed.stop().await;
    assert!(
        rx.borrow()
            .venues
            .iter()
            .all(|v| v.health.state == LinkState::Stopped)
    );
    sim.shutdown().await;
}
