#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

async fn serve(config: ConsoleConfig) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(config)).await });
    url
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_shell_and_every_file_with_its_content_type_and_security_headers() {
    let url = serve(ConsoleConfig::default()).await;
    let http = no_redirects();
    let mut files = vec![("".to_owned(), "text/html; charset=utf-8")];
    files.push(("config.json".to_owned(), "application/json"));
    files.extend(ASSETS.iter().map(|a| (a.name.to_owned(), a.content_type)));
    for (name, content_type) in files {
        let response = http
            .get(format!("{url}/console/{name}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name}");
        let headers = response.headers();
        assert_eq!(headers["content-type"], content_type, "{name}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["cache-control"], "no-cache");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("connect-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(headers.contains_key("etag"));
    }
}

#[tokio::test]
async fn a_current_copy_gets_304() {
    let url = serve(ConsoleConfig::default()).await;
    let http = no_redirects();
    let first = http
        .get(format!("{url}/console/app.js"))
        .send()
        .await
        .unwrap();
    let tag = first.headers()["etag"].clone();
    let again = http
        .get(format!("{url}/console/app.js"))
        .header("if-none-match", tag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.headers().contains_key("content-security-policy"));
    let stale = http
        .get(format!("{url}/console/app.js"))
        .header("if-none-match", "\"0\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
}

#[tokio::test]
async fn console_without_a_slash_redirects_and_unknown_files_are_404() {
    let url = serve(ConsoleConfig::default()).await;
    let http = no_redirects();
    let response = http.get(format!("{url}/console")).send().await.unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(response.headers()["location"], "/console/");
    for path in ["nope.js", "%2e%2e%2fCargo.toml", "sub/app.js"] {
        let response = http
            .get(format!("{url}/console/{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    }
}

#[tokio::test]
async fn config_json_names_the_oidc_issuer_and_the_csp_allows_its_origin() {
    let config = ConsoleConfig {
        oidc: Some(ConsoleOidc {
            issuer: "https://id.example:8443/realms/krake".to_owned(),
            client_id: "krake-console".to_owned(),
        }),
    };
    let url = serve(config).await;
    let response = reqwest::get(format!("{url}/console/config.json"))
        .await
        .unwrap();
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("connect-src 'self' https://id.example:8443;"),
        "{csp}"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"oidc": {
            "issuer": "https://id.example:8443/realms/krake",
            "client_id": "krake-console",
        }})
    );
    let plain = serve(ConsoleConfig::default()).await;
    let body: serde_json::Value = reqwest::get(format!("{plain}/console/config.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body, serde_json::json!({}));
}

#[test]
fn origins() {
    assert_eq!(
        origin_of("https://id.example/realms/x").as_deref(),
        Some("https://id.example")
    );
    assert_eq!(
        origin_of("http://u@127.0.0.1:9000?x").as_deref(),
        Some("http://127.0.0.1:9000")
    );
    assert_eq!(origin_of("javascript:alert(1)"), None);
    assert_eq!(origin_of("https://a b"), None);
    assert_eq!(origin_of("https://a;script-src *"), None);
}

#[test]
fn the_shell_has_no_inline_script_or_style() {
    let lower = INDEX.to_lowercase();
    assert!(!lower.contains("<style"));
    assert!(!lower.contains(" style="));
    for (at, _) in lower.match_indices(" on") {
        let rest = &lower[at + 3..];
        let word: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
        assert!(
            !rest[word.len()..].starts_with('='),
            "an inline event handler: on{word}"
        );
    }
    for script in lower.split("<script").skip(1) {
        let tag = script.split('>').next().unwrap();
        assert!(tag.contains("src="), "an inline script: <script{tag}>");
    }
    for asset in ASSETS {
        if asset.name.ends_with(".js") {
            let text = std::str::from_utf8(asset.body).unwrap();
            assert!(!text.contains("eval("), "{}", asset.name);
            assert!(!text.contains("new Function"), "{}", asset.name);
            assert!(!text.contains("localStorage"), "{}", asset.name);
            assert!(!text.contains("sessionStorage"), "{}", asset.name);
            assert!(!text.contains("document.cookie"), "{}", asset.name);
        }
    }
}
