//! Who may reach the HTTP side of `swoop server`: the listening address and Basic
//! authentication. Without credentials the server only listens on a loopback address;
//! anywhere else it refuses to start unless `--insecure` says so.

use std::net::IpAddr;

use swoop_server::BasicAuth;

#[derive(clap::Args)]
pub struct AccessArgs {
    /// Basic authentication for the web page and the API: the user (with --auth-password).
    /// Webhook triggers and /health stay open.
    #[arg(long, env = "SWOOP_AUTH_USER")]
    auth_user: Option<String>,
    /// The password of --auth-user.
    #[arg(long, env = "SWOOP_AUTH_PASSWORD", hide_env_values = true)]
    auth_password: Option<String>,
    /// Listen on a non-loopback address without authentication.
    #[arg(long)]
    insecure: bool,
}

impl AccessArgs {
    /// The authentication to apply when listening on `host`, or why the server may not start.
    pub fn auth_for(&self, host: &str) -> anyhow::Result<Option<BasicAuth>> {
        let auth = match (&self.auth_user, &self.auth_password) {
            (Some(user), Some(password)) => {
                Some(BasicAuth::new(user, password).map_err(anyhow::Error::msg)?)
            }
            (None, None) => None,
            (Some(_), None) => anyhow::bail!(
                "--auth-user needs --auth-password (or SWOOP_AUTH_PASSWORD in the environment)"
            ),
            (None, Some(_)) => anyhow::bail!(
                "--auth-password needs --auth-user (or SWOOP_AUTH_USER in the environment)"
            ),
        };
        if auth.is_none() && !self.insecure && !is_loopback(host) {
            anyhow::bail!(
                "refusing to listen on {host} without authentication: anyone who reaches it could run flows. \
                 Set --auth-user and --auth-password (or SWOOP_AUTH_USER and SWOOP_AUTH_PASSWORD), \
                 listen on 127.0.0.1, or pass --insecure if something in front of swoop authenticates"
            );
        }
        Ok(auth)
    }
}

/// `127.0.0.1`, `::1` (or any loopback address) and `localhost`.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(user: Option<&str>, password: Option<&str>, insecure: bool) -> AccessArgs {
        AccessArgs {
            auth_user: user.map(str::to_string),
            auth_password: password.map(str::to_string),
            insecure,
        }
    }

    #[test]
    fn no_auth_only_on_loopback_unless_insecure() {
        for host in ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"] {
            assert!(args(None, None, false).auth_for(host).unwrap().is_none());
        }
        for host in ["0.0.0.0", "10.1.2.3", "::"] {
            let e = args(None, None, false)
                .auth_for(host)
                .unwrap_err()
                .to_string();
            assert!(e.contains("--auth-user") && e.contains("--insecure"), "{e}");
            assert!(args(None, None, true).auth_for(host).unwrap().is_none());
        }
    }

    #[test]
    fn credentials_come_in_pairs() {
        let auth = args(Some("admin"), Some("pw"), false)
            .auth_for("0.0.0.0")
            .unwrap();
        assert_eq!(auth.unwrap().user(), "admin");
        assert!(
            args(Some("admin"), None, false)
                .auth_for("127.0.0.1")
                .is_err()
        );
        assert!(args(None, Some("pw"), false).auth_for("127.0.0.1").is_err());
        assert!(
            args(Some("a:b"), Some("pw"), false)
                .auth_for("127.0.0.1")
                .is_err()
        );
    }
}
