//! What an ops team sees: the counters after known traffic (and
//! `promtool check metrics` on both scrapes), every metric the dashboard and
//! the alert rules use being one the binaries export, `/healthz` and
//! `/readyz` naming what is not ready, and one request followed from ingest
//! to delivery by its request id and trace.

mod correlation;
mod dashboard;
mod health;
mod metrics;
mod scrape;
