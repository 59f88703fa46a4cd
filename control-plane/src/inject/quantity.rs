//! Kubernetes resource quantities (`100m`, `64Mi`, `0.5`, `1e3`), parsed
//! only far enough to refuse a bad one before the API server does (an
//! invalid `weft.dev/proxy-cpu` denies the Pod with a message naming the
//! annotation) and to compare a request with a limit.

/// The value of `s` in base units (cores, bytes), or why it is not a
/// quantity. Negative values are refused: they mean nothing for resources.
pub(crate) fn parse(s: &str) -> Result<f64, String> {
    let bad = |why: &str| Err(format!("{s:?} is not a Kubernetes quantity ({why})"));
    let body = s.strip_prefix('+').unwrap_or(s);
    if body.starts_with('-') {
        return bad("negative");
    }
    let digits_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(digits_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return bad("expected a number such as 100m, 0.5 or 64Mi");
    }
    let Ok(value) = number.parse::<f64>() else {
        return bad("expected a number such as 100m, 0.5 or 64Mi");
    };
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => {
            let e = &exp[1..];
            let e = e.strip_prefix('+').unwrap_or(e);
            let valid = !e.is_empty()
                && e.strip_prefix('-')
                    .unwrap_or(e)
                    .bytes()
                    .all(|b| b.is_ascii_digit());
            match e.parse::<i32>() {
                Ok(n) if valid => 10f64.powi(n),
                _ => return bad("bad exponent"),
            }
        }
        _ => return bad("unknown suffix; use m, k, M, G, Ki, Mi, Gi, ..."),
    };
    Ok(value * scale)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn quantities_parse_as_the_api_server_reads_them() {
        for (s, v) in [
            ("50m", 0.05),
            ("1", 1.0),
            ("0.5", 0.5),
            (".5", 0.5),
            ("2.", 2.0),
            ("+3", 3.0),
            ("64Mi", 64.0 * 1024.0 * 1024.0),
            ("1Gi", 1024f64.powi(3)),
            ("128M", 128e6),
            ("1e3", 1000.0),
            ("1E-3", 0.001),
            ("1e+2", 100.0),
        ] {
            let got = parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert!((got - v).abs() <= v * 1e-12, "{s}: {got} != {v}");
        }
        for s in [
            "", "abc", "-1", "1.2.3", "64MB", "1 Gi", "Mi", ".", "1e", "1ex", "1e--1", "0x10",
        ] {
            let e = parse(s).expect_err(s);
            assert!(e.contains("is not a Kubernetes quantity"), "{e}");
        }
    }
}
