//! The HTTP request itself: method, content type, form fields, body size.

use crate::helpers::{both_backends, spawn_app, urlencode};

both_backends!(other_methods_are_405);
async fn other_methods_are_405() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/backchannel-logout"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 405);
    let r = app
        .client
        .put(app.url("/backchannel-logout"))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 405);
}

both_backends!(a_charset_parameter_and_extra_fields_are_fine);
async fn a_charset_parameter_and_extra_fields_are_fine() {
    let app = spawn_app().await;
    let body = format!("a=1&logout_token={}&b=2", urlencode(&app.valid_token()));
    let a = app
        .post_raw("application/x-www-form-urlencoded; charset=UTF-8", body)
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let r = app.last_record().await;
    assert_eq!(r.source_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(r.user_agent.as_deref(), Some("Auth0/test"));
}

both_backends!(a_wrong_content_type_is_a_recorded_malformed_request);
async fn a_wrong_content_type_is_a_recorded_malformed_request() {
    let app = spawn_app().await;
    let a = app
        .post_raw(
            "application/json",
            format!("{{\"logout_token\":\"{}\"}}", app.valid_token()),
        )
        .await;
    assert_eq!((a.status, a.code()), (400, "malformed_request"));
    assert_eq!(
        app.last_record().await.reason.as_deref(),
        Some("malformed_request")
    );
}

both_backends!(two_logout_tokens_in_one_form_are_refused);
async fn two_logout_tokens_in_one_form_are_refused() {
    let app = spawn_app().await;
    let t = urlencode(&app.valid_token());
    let a = app
        .post_raw(
            "application/x-www-form-urlencoded",
            format!("logout_token={t}&logout_token={t}"),
        )
        .await;
    assert_eq!((a.status, a.code()), (400, "malformed_request"));
}

both_backends!(a_body_over_64_kib_is_413_and_recorded);
async fn a_body_over_64_kib_is_413_and_recorded() {
    let app = spawn_app().await;
    let body = format!("logout_token={}", "a".repeat(64 * 1024));
    let a = app
        .post_raw("application/x-www-form-urlencoded", body)
        .await;
    assert_eq!((a.status, a.code()), (413, "malformed_request"));
    assert_eq!(a.header("cache-control"), Some("no-store"));
    let r = app.last_record().await;
    assert_eq!(r.reason.as_deref(), Some("malformed_request"));
    // Just under the limit is read (and then judged as a token).
    let body = format!("logout_token={}", "a".repeat(64 * 1024 - 13));
    let a = app
        .post_raw("application/x-www-form-urlencoded", body)
        .await;
    assert_eq!((a.status, a.code()), (400, "malformed_token"));
}
