//! Custom-resource constraints: the custom resource definitions an
//! application needs, which the cluster must list in `spec.custom_resources`.
//!
//! A constraint is the name of a CustomResourceDefinition, `<plural>.<group>`
//! (e.g. `crontabs.stable.example.com`), matched by exact string comparison.

/// True if every custom resource in `required` is in `available`.
///
/// ```
/// use krake_data::constraints::custom_resources_match;
///
/// let cluster = vec!["crontabs.stable.example.com".to_owned()];
/// assert!(custom_resources_match(&[], &cluster));
/// assert!(custom_resources_match(&cluster, &cluster));
/// assert!(!custom_resources_match(&["certificates.cert-manager.io".to_owned()], &cluster));
/// ```
pub fn custom_resources_match(required: &[String], available: &[String]) -> bool {
    required.iter().all(|crd| available.contains(crd))
}

/// Checks that `name` looks like a CustomResourceDefinition name,
/// `<plural>.<group>`: lower-case DNS labels separated by dots, at least two.
pub fn validate_custom_resource(name: &str) -> Result<(), String> {
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |label: &&str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if labels.len() >= 2 && name.len() <= 253 && labels.iter().all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "Invalid custom resource {}: expected a CustomResourceDefinition name \
             '<plural>.<group>' in lower case, e.g. 'crontabs.stable.example.com'.",
            crate::validation::python_str_repr(name)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_names() {
        for good in ["crontabs.stable.example.com", "a.b", "my-res.x1.io"] {
            assert!(validate_custom_resource(good).is_ok(), "{good}");
        }
        for bad in [
            "crontab",
            "",
            "CronTabs.example.com",
            "a..b",
            "-a.b",
            "a.b-",
            "a b.c",
        ] {
            let err = validate_custom_resource(bad).unwrap_err();
            assert!(err.starts_with("Invalid custom resource"), "{bad}: {err}");
        }
    }

    #[test]
    fn all_required_must_be_available() {
        let available = vec!["a.x".to_owned(), "b.x".to_owned()];
        assert!(custom_resources_match(
            &["b.x".to_owned(), "a.x".to_owned()],
            &available
        ));
        assert!(!custom_resources_match(&["c.x".to_owned()], &available));
        assert!(!custom_resources_match(&["a.x".to_owned()], &[]));
    }
}
