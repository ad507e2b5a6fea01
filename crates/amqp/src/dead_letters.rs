//! Reading dead letters: the daemon's own carry `failure-reason`; those the
//! broker made (a quorum queue's delivery limit, a TTL, a length limit) carry
//! only `x-death`, whose first entry's `reason` says why. Everything that
//! reads dead letters goes through here, so it understands both.

use lapin::types::{AMQPValue, FieldTable};

/// Why a dead letter is one: `failure-reason`, else the newest `x-death`
/// entry's `reason` (`delivery_limit`, `expired`, `maxlen`, `rejected`).
pub fn dead_letter_reason(headers: Option<&FieldTable>) -> Option<String> {
    let headers = headers?.inner();
    if let Some(reason) = headers.get("failure-reason").and_then(text) {
        return Some(reason);
    }
    let AMQPValue::FieldArray(deaths) = headers.get("x-death")? else {
        return None;
    };
    match deaths.as_slice().first()? {
        AMQPValue::FieldTable(death) => death.inner().get("reason").and_then(text),
        _ => None,
    }
}

fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString};

    #[test]
    fn reads_ours_and_the_brokers() {
        let mut ours = FieldTable::default();
        ours.insert(
            "failure-reason".into(),
            AMQPValue::LongString(LongString::from("zoom_rejected")),
        );
        assert_eq!(
            dead_letter_reason(Some(&ours)).as_deref(),
            Some("zoom_rejected")
        );

        let mut death = FieldTable::default();
        death.insert(
            "reason".into(),
            AMQPValue::LongString(LongString::from("delivery_limit")),
        );
        let mut brokers = FieldTable::default();
        brokers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        );
        assert_eq!(
            dead_letter_reason(Some(&brokers)).as_deref(),
            Some("delivery_limit")
        );
        assert_eq!(dead_letter_reason(None), None);
    }
}
