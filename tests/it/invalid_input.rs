//! Bad input is dead-lettered as `invalid_payload` without any Zoom call, and
//! the daemon goes on with the next event.

use crate::helpers::{
    event, groups_of, header_int, header_str, mapped_zoom, spawn_on_fake, wait_for_calls,
};

#[tokio::test]
async fn invalid_messages_are_dead_lettered_and_the_next_event_is_processed() {
    let seed = mapped_zoom().user("U1", "u1@example.com", &["grp_eng"]);
    let (mut app, zoom) = spawn_on_fake(seed).await;

    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("malformed", b"{\"event_id\": \"e1\", ".to_vec()),
        ("not UTF-8", vec![0xff, 0xfe, b'{', 0x80]),
        (
            "dot-dot",
            event("e-dotdot", "../../users/me", Some("Engineering"), "Sales")
                .to_string()
                .into_bytes(),
        ),
        (
            "query",
            event("e-query", "abc?x=1", Some("Engineering"), "Sales")
                .to_string()
                .into_bytes(),
        ),
    ];
    for (_, body) in &bad {
        app.publish(body).await;
    }
    app.publish_json(event("e-valid", "U1", Some("Engineering"), "Sales"))
        .await;

    let letters = app.dead_letters(bad.len()).await;
    for (what, body) in &bad {
        let letter = letters
            .iter()
            .find(|l| &l.data == body)
            .unwrap_or_else(|| panic!("no dead letter for the {what} message"));
        assert_eq!(
            header_str(letter, "failure-reason").as_deref(),
            Some("invalid_payload"),
            "{what}"
        );
        assert!(
            header_str(letter, "detail").is_some_and(|d| !d.is_empty()),
            "{what}"
        );
        assert_eq!(header_int(letter, "failure-attempts"), Some(0), "{what}");
    }
    let dotdot = letters.iter().find(|l| l.data == bad[2].1).unwrap();
    assert_eq!(
        dotdot.properties.message_id().as_ref().map(|s| s.as_str()),
        Some("e-dotdot")
    );
    assert!(
        header_str(dotdot, "detail")
            .unwrap()
            .contains("zoom_user_id")
    );

    wait_for_calls(&zoom, 1).await;
    app.stop_and_assert_queues_empty().await;
    let requests = zoom.api_requests();
    assert_eq!(requests.len(), 1, "only the valid event reached Zoom");
    assert_eq!(requests[0].path, "/v2/groups/grp_eng/members/U1");
    assert_eq!(groups_of(&zoom, "U1"), ["grp_sales"]);
}

/// `me` (in any case) and Zoom's other reserved words are no user id: the
/// event is dead-lettered as invalid before any Zoom call, so nothing asks
/// for `/users/me` (the token's own user) or acts on it.
#[tokio::test]
async fn reserved_user_id_words_are_invalid_and_never_reach_zoom() {
    let seed = mapped_zoom().user("U1", "u1@example.com", &["grp_eng"]);
    let (mut app, zoom) = spawn_on_fake(seed).await;
    let words = ["me", "ME", "Me", "email", "summary", "vanity_name"];
    for word in words {
        let id = format!("e-{word}");
        app.publish_json(event(&id, word, Some("Engineering"), "Sales"))
            .await;
    }
    app.publish_json(event("e-valid", "U1", Some("Engineering"), "Sales"))
        .await;
    let letters = app.dead_letters(words.len()).await;
    for letter in &letters {
        assert_eq!(
            header_str(letter, "failure-reason").as_deref(),
            Some("invalid_payload")
        );
        let detail = header_str(letter, "detail").unwrap_or_default();
        assert!(detail.contains("reserves"), "{detail}");
    }
    wait_for_calls(&zoom, 1).await;
    app.stop_and_assert_queues_empty().await;
    let requests = zoom.api_requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        ["/v2/groups/grp_eng/members/U1"],
        "only the valid event"
    );
}
