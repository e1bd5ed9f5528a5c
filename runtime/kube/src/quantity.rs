//! Kubernetes resource quantities (`500m`, `2`, `1.5Gi`, `128k`, `1e3`): reading them for
//! `play`, writing CPU and memory for `generate`.
//!
//! Kubernetes spells units differently from docker: `k` is 1000 and `m` is one thousandth
//! (`memory: 512m` is half a byte), so aac's own parsers (which follow docker for `512m`)
//! are not used here.

use aac_agent::{Bytes, MilliCpu};

const NANO: u128 = 1_000_000_000;

/// A quantity in billionths of its unit, rounded up; None when it is not a quantity, is
/// negative or too large.
pub fn parse_nanos(s: &str) -> Option<u128> {
    let t = s.trim();
    let t = t.strip_prefix('+').unwrap_or(t);
    let num_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(num_end);
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    // mantissa as an integer with `frac.len()` decimals
    let digits = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    let mantissa: u128 = if digits.is_empty() {
        0
    } else {
        if digits.len() > 30 {
            return None;
        }
        digits.parse().ok()?
    };
    let mut scale_down = u32::try_from(frac.len()).ok()?; // divide by 10^scale_down
    let mut mult: u128 = NANO;
    match suffix {
        "" => {}
        "Ki" => mult *= 1 << 10,
        "Mi" => mult *= 1 << 20,
        "Gi" => mult *= 1 << 30,
        "Ti" => mult *= 1 << 40,
        "Pi" => mult *= 1 << 50,
        "Ei" => mult *= 1 << 60,
        "n" => mult = 1,
        "u" => mult = 1_000,
        "m" => mult = 1_000_000,
        "k" => mult *= 1_000,
        "M" => mult *= 1_000_000,
        "G" => mult *= 1_000_000_000,
        "T" => mult *= 1_000_000_000_000,
        "P" => mult *= 1_000_000_000_000_000,
        "E" => mult *= 1_000_000_000_000_000_000,
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().ok()?;
            if exp >= 0 {
                let exp = u32::try_from(exp).ok()?;
                if exp > 30 {
                    return None;
                }
                mult = mult.checked_mul(10u128.checked_pow(exp)?)?;
            } else {
                scale_down = scale_down.checked_add(exp.unsigned_abs())?;
            }
        }
        _ => return None,
    }
    let product = mantissa.checked_mul(mult)?;
    if scale_down == 0 {
        return Some(product);
    }
    if scale_down > 38 {
        return Some(u128::from(product > 0));
    }
    let div = 10u128.pow(scale_down);
    Some(product.div_ceil(div))
}

/// CPU in millicores (rounded up, as Kubernetes does); None when not a positive quantity.
pub fn parse_cpu(s: &str) -> Option<MilliCpu> {
    let n = parse_nanos(s)?;
    let milli = u64::try_from(n.div_ceil(1_000_000)).ok()?;
    (milli > 0).then_some(MilliCpu(milli))
}

/// Memory or storage in bytes (rounded up); None when not a positive quantity.
pub fn parse_bytes(s: &str) -> Option<Bytes> {
    let n = parse_nanos(s)?;
    let b = u64::try_from(n.div_ceil(NANO)).ok()?;
    (b > 0).then_some(Bytes(b))
}

/// `2`, `500m`.
pub fn format_cpu(c: MilliCpu) -> String {
    if c.0.is_multiple_of(1000) {
        (c.0 / 1000).to_string()
    } else {
        format!("{}m", c.0)
    }
}

/// The shortest exact form: `2Gi`, `512Mi`, `1G`, `500M`, else bytes.
pub fn format_bytes(b: Bytes) -> String {
    for (unit, size) in [
        ("Ei", 1u64 << 60),
        ("Pi", 1 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if b.0 >= size && b.0.is_multiple_of(size) {
            return format!("{}{unit}", b.0 / size);
        }
    }
    for (unit, size) in [
        ("T", 1_000_000_000_000u64),
        ("G", 1_000_000_000),
        ("M", 1_000_000),
        ("k", 1_000),
    ] {
        if b.0 >= size && b.0.is_multiple_of(size) {
            return format!("{}{unit}", b.0 / size);
        }
    }
    b.0.to_string()
}

/// Docker's tmpfs `size=` spelling: `64m`, `1g`, `512k`, else bytes (binary units).
pub fn format_docker_size(b: Bytes) -> String {
    for (unit, size) in [("g", 1u64 << 30), ("m", 1 << 20), ("k", 1 << 10)] {
        if b.0 >= size && b.0.is_multiple_of(size) {
            return format!("{}{unit}", b.0 / size);
        }
    }
    b.0.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_spellings() {
        assert_eq!(parse_cpu("500m"), Some(MilliCpu(500)));
        assert_eq!(parse_cpu("2"), Some(MilliCpu(2000)));
        assert_eq!(parse_cpu("0.5"), Some(MilliCpu(500)));
        assert_eq!(parse_cpu("0.0001"), Some(MilliCpu(1)));
        assert_eq!(parse_cpu("1e0"), Some(MilliCpu(1000)));
        assert_eq!(parse_cpu("1e3m"), None);
        assert_eq!(parse_bytes("512Mi"), Some(Bytes(512 << 20)));
        assert_eq!(parse_bytes("1.5Gi"), Some(Bytes(3 << 29)));
        assert_eq!(parse_bytes("128k"), Some(Bytes(128_000)));
        assert_eq!(parse_bytes("1G"), Some(Bytes(1_000_000_000)));
        assert_eq!(parse_bytes("129e6"), Some(Bytes(129_000_000)));
        assert_eq!(parse_bytes("12E-1"), Some(Bytes(2)));
        // milli-bytes: rounded up to a byte, as Kubernetes does
        assert_eq!(parse_bytes("512m"), Some(Bytes(1)));
        for bad in [
            "",
            "-1",
            "1x",
            "Mi",
            "1.2.3",
            "1e",
            "99999999999999999999999999999Ei",
        ] {
            assert_eq!(
                parse_nanos(bad).and_then(|n| u64::try_from(n).ok()),
                None,
                "{bad}"
            );
        }
        assert_eq!(parse_cpu("0"), None);
    }

    #[test]
    fn formats_read_back() {
        for b in [
            1u64,
            1000,
            1024,
            64 << 20,
            2 << 30,
            1_000_000_000,
            1_500_000,
            12345,
        ] {
            assert_eq!(parse_bytes(&format_bytes(Bytes(b))), Some(Bytes(b)), "{b}");
        }
        assert_eq!(format_bytes(Bytes(2 << 30)), "2Gi");
        assert_eq!(format_bytes(Bytes(500_000_000)), "500M");
        for c in [1u64, 500, 1000, 2500] {
            assert_eq!(parse_cpu(&format_cpu(MilliCpu(c))), Some(MilliCpu(c)));
        }
        assert_eq!(format_docker_size(Bytes(64 << 20)), "64m");
    }
}
