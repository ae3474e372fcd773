//! OAuth2 upstreams, token URLs and per-sender accounts.

use super::*;

const OAUTH_UPSTREAM: &str = "addr = \"smtp.office365.com:587\"\nauth = \"xoauth2\"\nusername = \"scanner@contoso.com\"\n\
[upstream.oauth2]\ntoken_url = \"https://login.microsoftonline.com/t/oauth2/v2.0/token\"\n\
grant = \"client_credentials\"\nclient_id = \"app\"\nclient_secret_env = \"M365_SECRET\"\n";

#[test]
fn oauth2_upstream_is_fine() {
    let c = ok(&with_smtp_upstream(OAUTH_UPSTREAM));
    let up = c.upstream("provider").unwrap();
    assert_eq!(up.auth_mode(), UpstreamAuth::Xoauth2);
    assert_eq!(up.tls_mode(), TlsMode::Starttls);
    let o = up.oauth2.as_ref().unwrap();
    assert_eq!(*o.grant.get_ref(), Grant::ClientCredentials);
    assert_eq!(o.client_secret(), Some(Secret::Env("M365_SECRET".into())));
}

#[test]
fn oauth2_rules() {
    let rows: &[(&str, &str, &str, &str)] = &[
        // (replace, with, key, line of)
        (
            "[upstream.oauth2]\ntoken_url = \"https://login.microsoftonline.com/t/oauth2/v2.0/token\"\ngrant = \"client_credentials\"\nclient_id = \"app\"\nclient_secret_env = \"M365_SECRET\"\n",
            "",
            "upstream.oauth2",
            "auth = ",
        ),
        ("auth = \"xoauth2\"\n", "", "upstream.auth", "token_url"),
        (
            "https://login.microsoftonline.com",
            "http://login.microsoftonline.com",
            "upstream.oauth2.token_url",
            "token_url",
        ),
        (
            "client_secret_env = \"M365_SECRET\"\n",
            "",
            "upstream.oauth2.client_secret_env",
            "grant = ",
        ),
        (
            "grant = \"client_credentials\"\n",
            "grant = \"refresh_token\"\n",
            "upstream.oauth2.refresh_token_file",
            "grant = ",
        ),
        (
            "username = \"scanner@contoso.com\"\n",
            "username = \"scanner@contoso.com\"\npassword_env = \"X\"\n",
            "upstream.password",
            "password_env",
        ),
        (
            "client_secret_env = \"M365_SECRET\"\n",
            "client_secret_env = \"M365_SECRET\"\nclient_secret_file = \"s\"\n",
            "upstream.oauth2.client_secret_file",
            "client_secret_file",
        ),
    ];
    for (from, to, key, at) in rows {
        let text = with_smtp_upstream(&OAUTH_UPSTREAM.replace(from, to));
        assert_invalid(&text, key, line_of(&text, at));
    }
}

#[test]
fn token_urls() {
    for good in [
        "https://x.example/t",
        "http://127.0.0.1:8080/t",
        "http://localhost/t",
        "http://[::1]:9/t",
    ] {
        assert!(check_token_url(good).is_ok(), "{good}");
    }
    for bad in [
        "http://10.0.0.1/t",
        "ftp://x/t",
        "https:///t",
        "https://user@x/t",
        "x.example/t",
    ] {
        assert!(check_token_url(bad).is_err(), "{bad}");
    }
}

const ACCOUNTS: &str = "addr = \"smtpdm.aliyun.com:465\"\n\
[[upstream.account]]\nusername = \"alerts@mail.example.com\"\npassword_env = \"DM_ALERTS\"\n\
[[upstream.account]]\nusername = \"scans@mail.example.com\"\npassword_env = \"DM_SCANS\"\n";

#[test]
fn upstream_accounts_are_fine() {
    let c = ok(&with_smtp_upstream(ACCOUNTS));
    let up = c.upstream("provider").unwrap();
    assert_eq!(up.account.len(), 2);
    assert_eq!(up.account[1].secret(), Some(Secret::Env("DM_SCANS".into())));
}

#[test]
fn upstream_account_rules() {
    let rows: &[(&str, &str, &str, &str)] = &[
        (
            "addr = \"smtpdm.aliyun.com:465\"\n",
            "addr = \"smtpdm.aliyun.com:465\"\nusername = \"x@y.z\"\n",
            "upstream.account",
            "username = \"x@y.z\"",
        ),
        (
            "scans@mail.example.com",
            "ALERTS@mail.example.com",
            "upstream.account.username",
            "ALERTS@",
        ),
        (
            "scans@mail.example.com",
            "scans",
            "upstream.account.username",
            "\"scans\"",
        ),
        (
            "password_env = \"DM_SCANS\"\n",
            "",
            "upstream.account.password_env",
            "scans@",
        ),
        (
            "password_env = \"DM_SCANS\"\n",
            "password_env = \"DM_SCANS\"\npassword = \"p\"\n",
            "upstream.account.password",
            "password_env = \"DM_SCANS\"",
        ),
    ];
    for (from, to, key, at) in rows {
        let text = with_smtp_upstream(&ACCOUNTS.replace(from, to));
        assert_invalid(&text, key, line_of(&text, at));
    }
}

/// `ACCOUNTS` with scans@ on OAuth2 of its own.
const OAUTH_ACCOUNT: &str = "auth = \"oauthbearer\"\n[upstream.account.oauth2]\n\
token_url = \"https://oauth2.googleapis.com/token\"\ngrant = \"refresh_token\"\n\
client_id = \"app\"\nrefresh_token_file = \"/var/lib/postern/scans.refresh\"\n";

#[test]
fn an_account_may_have_oauth2_of_its_own() {
    let text =
        with_smtp_upstream(&ACCOUNTS.replace("password_env = \"DM_SCANS\"\n", OAUTH_ACCOUNT));
    let c = ok(&text);
    let up = c.upstream("provider").unwrap();
    assert_eq!(up.account[1].auth_mode(), UpstreamAuth::Oauthbearer);
    assert!(up.account[1].oauth2.is_some());
    assert_eq!(up.account[1].secret(), None);
    assert_eq!(up.account[0].auth_mode(), UpstreamAuth::Auto);
}

#[test]
fn account_oauth2_rules() {
    let base = ACCOUNTS.replace("password_env = \"DM_SCANS\"\n", OAUTH_ACCOUNT);
    let rows: &[(&str, &str, &str, &str)] = &[
        // OAuth2 without its section.
        (
            "[upstream.account.oauth2]\ntoken_url = \"https://oauth2.googleapis.com/token\"\ngrant = \"refresh_token\"\nclient_id = \"app\"\nrefresh_token_file = \"/var/lib/postern/scans.refresh\"\n",
            "",
            "upstream.account.oauth2",
            "auth = \"oauthbearer\"",
        ),
        // A section without an OAuth2 mechanism.
        (
            "auth = \"oauthbearer\"\n",
            "password_env = \"DM_SCANS\"\n",
            "upstream.account.auth",
            "token_url",
        ),
        // A password besides the token.
        (
            "auth = \"oauthbearer\"\n",
            "auth = \"oauthbearer\"\npassword_env = \"DM_SCANS\"\n",
            "upstream.account.password",
            "password_env = \"DM_SCANS\"",
        ),
        // The section's own rules, under the account's path.
        (
            "refresh_token_file = \"/var/lib/postern/scans.refresh\"\n",
            "",
            "upstream.account.oauth2.refresh_token_file",
            "grant = \"refresh_token\"",
        ),
        (
            "https://oauth2.googleapis.com/token",
            "http://10.0.0.1/token",
            "upstream.account.oauth2.token_url",
            "http://10.0.0.1",
        ),
    ];
    for (from, to, key, at) in rows {
        let text = with_smtp_upstream(&base.replace(from, to));
        assert_invalid(&text, key, line_of(&text, at));
    }
}
