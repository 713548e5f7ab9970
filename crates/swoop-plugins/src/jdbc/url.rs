//! JDBC URLs, `jdbc:<scheme>://host[:port][,host2[:port2]…][/database][?key=value&…]`, split
//! into hosts, database and (percent-decoded) parameters; each driver maps the parameters it
//! knows and refuses the others. Messages never repeat the URL, which may hold a password.

pub struct JdbcUrl {
    pub hosts: Vec<(String, u16)>,
    pub database: Option<String>,
    pub params: Vec<(String, String)>,
}

impl JdbcUrl {
    pub fn parse(url: &str, schemes: &[&str], default_port: u16) -> Result<JdbcUrl, String> {
        let expected = schemes
            .iter()
            .map(|s| format!("jdbc:{s}://"))
            .collect::<Vec<_>>();
        let rest = expected
            .iter()
            .find_map(|prefix| url.trim().strip_prefix(prefix.as_str()))
            .ok_or_else(|| {
                format!(
                    "`url` must start with {} (a JDBC URL such as `{}host:port/database`)",
                    expected.join(" or "),
                    expected[0]
                )
            })?;
        let (location, query) = match rest.split_once('?') {
            Some((l, q)) => (l, Some(q)),
            None => (rest, None),
        };
        let (authority, database) = match location.split_once('/') {
            Some((a, d)) => (a, Some(d)),
            None => (location, None),
        };
        if authority.contains('@') {
            return Err(
                "`url`: credentials in the host part are not JDBC syntax; use `username` and `password`"
                    .into(),
            );
        }
        let mut hosts = Vec::new();
        for part in authority.split(',') {
            hosts.push(host_port(part, default_port)?);
        }
        let database = database
            .filter(|d| !d.is_empty())
            .map(|d| decode(d, "the database name"))
            .transpose()?;
        let mut params = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(k, "a parameter name")?;
            let value = decode(v, &format!("the value of `{key}`"))?;
            params.push((key, value));
        }
        Ok(JdbcUrl {
            hosts,
            database,
            params,
        })
    }

    /// `host:port/database` (the first host), for messages.
    pub fn label(&self) -> String {
        let (host, port) = self
            .hosts
            .first()
            .map_or(("?", 0), |(h, p)| (h.as_str(), *p));
        format!("{host}:{port}/{}", self.database.as_deref().unwrap_or(""))
    }
}

fn host_port(part: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = part.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("`url`: `{part}` opens `[` without closing it"))?;
        (host, after.strip_prefix(':'))
    } else {
        match part.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (part, None),
        }
    };
    if host.is_empty() {
        return Err("`url` names no host (write `//host:port/database`)".into());
    }
    let port = match port {
        None | Some("") => default_port,
        Some(p) => p
            .parse()
            .map_err(|_| format!("`url`: `{p}` is not a port number"))?,
    };
    Ok((host.to_string(), port))
}

/// Percent-decoding (`%40` → `@`, `+` kept as is, as JDBC drivers do).
fn decode(s: &str, what: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("`url`: a bad %-escape in {what}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`url`: {what} is not UTF-8 once decoded"))
}

/// A `true`/`false` URL parameter.
pub fn bool_param(key: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(format!(
            "`url`: `{key}` must be true or false, got `{value}`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_database_and_parameters() {
        let u = JdbcUrl::parse(
            "jdbc:postgresql://a:1,[::1]:2,b/my%20db?user=x&password=p%26q",
            &["postgresql"],
            5432,
        )
        .unwrap();
        assert_eq!(
            u.hosts,
            [("a".into(), 1), ("::1".into(), 2), ("b".into(), 5432)]
        );
        assert_eq!(u.database.as_deref(), Some("my db"));
        assert_eq!(u.params[1], ("password".into(), "p&q".into()));
        assert_eq!(u.label(), "a:1/my db");
        let err = JdbcUrl::parse("postgres://h/db", &["postgresql"], 5432)
            .err()
            .unwrap();
        assert!(err.contains("jdbc:postgresql://"), "{err}");
        assert!(JdbcUrl::parse("jdbc:postgresql://u:pw@h/db", &["postgresql"], 1).is_err());
    }
}
