//! The install.sh command line for a non-interactive Active/Active install: pure, from
//! `[install]` and the instance's address (the flows build it; the TFE adapter only runs it).

use crate::config::InstallSection;

/// Flags for a non-interactive Active/Active install (docs/design/tfe-tools.md §1.3, §1.5): no
/// Admin UI, both addresses given (so no prompt and no metadata discovery), the proxy decided (so
/// no proxy prompt), and fast timeouts for whatever prompt remains.
pub fn install_args(cfg: &InstallSection, private_ipv4: &str) -> Vec<String> {
    let mut args = vec![
        "disable-replicated-ui".to_string(),
        format!("private-address={private_ipv4}"),
        format!("public-address={private_ipv4}"),
    ];
    match &cfg.http_proxy {
        Some(proxy) => {
            args.push(format!("http-proxy={proxy}"));
            if !cfg.additional_no_proxy.is_empty() {
                args.push(format!(
                    "additional-no-proxy={}",
                    cfg.additional_no_proxy.join(",")
                ));
            }
        }
        None => args.push("no-proxy".to_string()),
    }
    args.push("fast-timeouts".to_string());
    args.extend(cfg.extra_args.iter().cloned());
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(proxy: Option<&str>, no_proxy: &[&str], extra: &[&str]) -> InstallSection {
        InstallSection {
            script: "/opt/tfe/install.sh".into(),
            timeout: std::time::Duration::from_secs(60),
            sha256: None,
            http_proxy: proxy.map(str::to_string),
            additional_no_proxy: no_proxy.iter().map(|s| s.to_string()).collect(),
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn without_proxy() {
        assert_eq!(
            install_args(&section(None, &[], &[]), "10.0.1.5"),
            [
                "disable-replicated-ui",
                "private-address=10.0.1.5",
                "public-address=10.0.1.5",
                "no-proxy",
                "fast-timeouts"
            ]
        );
    }

    #[test]
    fn with_proxy_no_proxy_list_and_extra_args() {
        let args = install_args(
            &section(
                Some("http://proxy:3128"),
                &["s3.amazonaws.com", "db.internal"],
                &["bypass-firewalld-warning"],
            ),
            "10.0.1.5",
        );
        assert_eq!(
            args,
            [
                "disable-replicated-ui",
                "private-address=10.0.1.5",
                "public-address=10.0.1.5",
                "http-proxy=http://proxy:3128",
                "additional-no-proxy=s3.amazonaws.com,db.internal",
                "fast-timeouts",
                "bypass-firewalld-warning"
            ]
        );
    }
}
