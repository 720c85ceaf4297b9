use super::*;
use prometheus::{Encoder, TextEncoder};

fn render(metrics: &GatewayMetrics) -> String {
    let mut buffer = Vec::new();
    TextEncoder::new()
        .encode(&metrics.registry.gather(), &mut buffer)
        .unwrap();
    String::from_utf8(buffer).unwrap()
}

#[test]
fn a_configured_source_has_every_series_from_the_start() {
    let metrics = GatewayMetrics::new().unwrap();
    metrics.register_sources(["whatzme"]);
    let text = render(&metrics);
    for outcome in REQUEST_OUTCOMES {
        let line =
            format!(r#"sluice_gateway_requests_total{{outcome="{outcome}",source="whatzme"}} 0"#);
        assert!(text.contains(&line), "{line}");
    }
    assert!(text.contains(r#"sluice_gateway_dedup_bypass_total{source="whatzme"} 0"#));
    assert!(text.contains(r#"sluice_gateway_redis_duration_seconds_count{operation="claim"} 0"#));
    assert!(text.contains("sluice_gateway_build_info{"));
}

#[test]
fn published_types_are_capped_per_source() {
    let metrics = GatewayMetrics::new().unwrap();
    for i in 0..=MAX_TYPES_PER_SOURCE {
        metrics.count_published_type("s", &format!("t{i}"));
    }
    metrics.count_published_type("s", "t0");
    let text = render(&metrics);
    assert!(text.contains(r#"sluice_gateway_events_published_total{source="s",type="t0"} 2"#));
    assert!(text.contains(r#"sluice_gateway_events_published_total{source="s",type="other"} 1"#));
}

#[test]
fn a_failed_redis_call_marks_redis_down() {
    let metrics = GatewayMetrics::new().unwrap();
    metrics.observe_redis("claim", Duration::from_micros(300), true);
    assert!(render(&metrics).contains("sluice_gateway_redis_up 1"));
    metrics.observe_redis("claim", Duration::from_millis(250), false);
    let text = render(&metrics);
    assert!(text.contains("sluice_gateway_redis_up 0"));
    assert!(text.contains(
        r#"sluice_gateway_redis_duration_seconds_bucket{operation="claim",le="0.0005"} 1"#
    ));
}
