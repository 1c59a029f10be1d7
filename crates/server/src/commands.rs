//! The subcommands that do not run the server: `sfumato token create` and
//! `sfumato key create`.

use anyhow::Context;

use crate::auth::{self, Claims, Grant};
use crate::config::{self, TokenArgs};

/// The lines `sfumato token create` prints: a summary, then the token alone on the last one.
pub fn token_create(args: TokenArgs, now: u64) -> anyhow::Result<Vec<String>> {
    let (key, secret) = match (&args.api_key, &args.api_secret, &args.config) {
        (Some(k), Some(s), _) => (k.clone(), s.clone()),
        (k, None, Some(file)) => config::key_from_file(file, k.as_deref())?,
        _ => anyhow::bail!(
            "no API key to sign with: give --api-key and --api-secret (or SFUMATO_API_KEY and \
             SFUMATO_API_SECRET), or --config with a [keys] table; `sfumato key create` makes \
             a key"
        ),
    };
    let in_room: Vec<&str> = args
        .grant
        .iter()
        .filter(|g| **g != Grant::Admin)
        .map(|g| g.as_str())
        .collect();
    if args.room.is_none() && !in_room.is_empty() {
        anyhow::bail!("--room is needed with {}", in_room.join(", "));
    }
    let mut grants = args.grant.clone();
    grants.dedup();
    let claims = Claims {
        iss: Some(key.clone()),
        sub: args.identity.clone(),
        name: args.name.clone(),
        room: args.room.clone(),
        grants,
        sources: (!args.sources.is_empty()).then(|| args.sources.clone()),
        exp: now.saturating_add(args.ttl),
        nbf: Some(now),
        iat: Some(now),
    };
    let token = auth::sign(&key, &secret, &claims).context("signing the token")?;
    let grants: Vec<&str> = claims.grants.iter().map(|g| g.as_str()).collect();
    let mut summary = format!("identity `{}`", claims.sub);
    if let Some(room) = &claims.room {
        summary.push_str(&format!(", room `{room}`"));
    }
    summary.push_str(&format!(", grants {}", grants.join(",")));
    if let Some(sources) = &claims.sources {
        let s: Vec<&str> = sources.iter().map(|s| s.as_str()).collect();
        summary.push_str(&format!(" (sources {})", s.join(",")));
    }
    summary.push_str(&format!(
        ", key `{key}`, valid {} s (until {} UTC)",
        args.ttl,
        utc(claims.exp)
    ));
    Ok(vec![summary, token])
}

/// The lines `sfumato key create` prints: a random key name and a 256-bit secret, as
/// environment variables.
pub fn key_create() -> anyhow::Result<Vec<String>> {
    let mut name = [0u8; 6];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut name)?;
    getrandom::fill(&mut secret)?;
    Ok(vec![
        "# A new API key. Start the server with it (--api-key/--api-secret, these variables, or"
            .into(),
        "# `name = \"secret\"` in the [keys] table of the config file), keep the secret secret."
            .into(),
        format!("SFUMATO_API_KEY=API{}", hex(&name)),
        format!("SFUMATO_API_SECRET={}", hex(&secret)),
    ])
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `YYYY-MM-DD HH:MM:SS` of a Unix time (the proleptic Gregorian calendar, UTC).
fn utc(t: u64) -> String {
    let (days, secs) = (t / 86_400, t % 86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use clap::Parser;

    use super::*;
    use crate::config::{Cli, Command, TokenCommand};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn args(extra: &[&str]) -> TokenArgs {
        let argv = [
            "sfumato",
            "token",
            "create",
            "--api-key",
            "k",
            "--api-secret",
            SECRET,
        ];
        match Cli::parse_from(argv.iter().chain(extra)).command {
            Some(Command::Token(TokenCommand::Create(a))) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_token_is_the_last_line_and_verifies() {
        let now = 1_800_000_000;
        let lines = token_create(
            args(&[
                "--room",
                "R",
                "--identity",
                "alice",
                "--name",
                "Alice",
                "--grant",
                "join,publish,subscribe",
                "--sources",
                "audio",
                "--ttl",
                "6h",
            ]),
            now,
        )
        .unwrap();
        assert!(lines[0].contains("alice") && lines[0].contains("join,publish,subscribe"));
        let keys = BTreeMap::from([("k".to_string(), SECRET.to_string())]);
        let auth = auth::Auth::new(&keys).unwrap();
        let c = auth.verify(lines.last().unwrap(), now).unwrap();
        assert_eq!(c.room.as_deref(), Some("R"));
        assert_eq!(c.display_name(), "Alice");
        assert_eq!(c.exp, now + 6 * 3600);
        assert_eq!(c.sources, Some(vec![auth::Source::Audio]));
        assert!(c.check_room("R", &[Grant::Join, Grant::Publish]).is_ok());
    }

    #[test]
    fn room_grants_need_a_room_and_admin_does_not() {
        let e = token_create(args(&["--identity", "a", "--grant", "join"]), 0).unwrap_err();
        assert!(e.to_string().contains("--room"), "{e}");
        assert!(token_create(args(&["--identity", "ops", "--grant", "admin"]), 0).is_ok());
    }

    #[test]
    fn keys_are_random_and_long_enough() {
        let a = key_create().unwrap();
        let b = key_create().unwrap();
        assert_ne!(a, b);
        let secret = a[3].strip_prefix("SFUMATO_API_SECRET=").unwrap();
        assert!(auth::check_key("k", secret).is_ok());
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(1_800_000_000), "2027-01-15 08:00:00");
    }
}
