//! Validators: cheap checks that run on a candidate match to cut false positives.

use base64::Engine as _;

/// Luhn checksum over the digits of `s` (separators ignored).
pub(crate) fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut double = false;
    for &d in digits.iter().rev() {
        let mut v = u32::from(d - b'0');
        if double {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
        double = !double;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// Whether a card number's leading digits and length belong to a known card network.
fn card_network(digits: &[u8]) -> bool {
    let n = digits.len();
    let p = |s: &[u8]| digits.starts_with(s);
    let two = if n >= 2 {
        u32::from(digits[0] - b'0') * 10 + u32::from(digits[1] - b'0')
    } else {
        0
    };
    let four = if n >= 4 {
        digits[..4]
            .iter()
            .fold(0u32, |a, &d| a * 10 + u32::from(d - b'0'))
    } else {
        0
    };
    (p(b"4") && matches!(n, 13 | 16 | 19)) // Visa
        || ((51..=55).contains(&two) || (2221..=2720).contains(&four)) && n == 16 // Mastercard
        || (two == 34 || two == 37) && n == 15 // Amex
        || (p(b"6011") || p(b"65") || (644..=649).contains(&(four / 10))) && (16..=19).contains(&n) // Discover
        || (3528..=3589).contains(&four) && (16..=19).contains(&n) // JCB
        || (two == 36 || two == 38 || (300..=305).contains(&(four / 10))) && (14..=19).contains(&n) // Diners
        || p(b"62") && (16..=19).contains(&n) // UnionPay
}

/// Payment card: the longest prefix of the candidate (cut at separators) that has consistent
/// separators, a known network prefix and length, and a valid Luhn checksum.
pub(crate) fn card(hay: &[u8], start: usize, end: usize) -> Option<usize> {
    let text = &hay[start..end];
    // candidate ends: the full match, then before each separator from the right
    let mut ends: Vec<usize> = vec![text.len()];
    for (i, &b) in text.iter().enumerate().rev() {
        if b == b' ' || b == b'-' {
            ends.push(i);
        }
    }
    for e in ends {
        let cand = &text[..e];
        let mut sep = None;
        let mut ok = true;
        let mut digits = Vec::with_capacity(19);
        for &b in cand {
            if b.is_ascii_digit() {
                digits.push(b);
            } else {
                match sep {
                    None => sep = Some(b),
                    Some(s) if s == b => {}
                    Some(_) => {
                        ok = false;
                        break;
                    }
                }
            }
        }
        if ok && (13..=19).contains(&digits.len()) && card_network(&digits) && luhn(&digits) {
            let abs = start + e;
            if hay.get(abs).is_some_and(|b| b.is_ascii_alphanumeric())
                || (hay.get(abs) == Some(&b'-') || hay.get(abs) == Some(&b'.'))
                    && hay.get(abs + 1).is_some_and(u8::is_ascii_digit)
            {
                continue;
            }
            return Some(abs);
        }
    }
    None
}

/// IBAN registry lengths per country (ISO 13616).
fn iban_length(cc: &[u8]) -> Option<usize> {
    Some(match cc {
        b"AD" => 24,
        b"AE" => 23,
        b"AL" => 28,
        b"AT" => 20,
        b"AZ" => 28,
        b"BA" => 20,
        b"BE" => 16,
        b"BG" => 22,
        b"BH" => 22,
        b"BR" => 29,
        b"CH" => 21,
        b"CR" => 22,
        b"CY" => 28,
        b"CZ" => 24,
        b"DE" => 22,
        b"DK" => 18,
        b"DO" => 28,
        b"EE" => 20,
        b"EG" => 29,
        b"ES" => 24,
        b"FI" => 18,
        b"FO" => 18,
        b"FR" => 27,
        b"GB" => 22,
        b"GE" => 22,
        b"GI" => 23,
        b"GL" => 18,
        b"GR" => 27,
        b"GT" => 28,
        b"HR" => 21,
        b"HU" => 28,
        b"IE" => 22,
        b"IL" => 23,
        b"IS" => 26,
        b"IT" => 27,
        b"JO" => 30,
        b"KW" => 30,
        b"KZ" => 20,
        b"LB" => 28,
        b"LI" => 21,
        b"LT" => 20,
        b"LU" => 20,
        b"LV" => 21,
        b"MC" => 27,
        b"MD" => 24,
        b"ME" => 22,
        b"MK" => 19,
        b"MR" => 27,
        b"MT" => 31,
        b"MU" => 30,
        b"NL" => 18,
        b"NO" => 15,
        b"PK" => 24,
        b"PL" => 28,
        b"PS" => 29,
        b"PT" => 25,
        b"QA" => 29,
        b"RO" => 24,
        b"RS" => 22,
        b"SA" => 24,
        b"SE" => 24,
        b"SI" => 19,
        b"SK" => 24,
        b"SM" => 27,
        b"TN" => 24,
        b"TR" => 26,
        b"UA" => 29,
        b"VG" => 24,
        b"XK" => 20,
        _ => return None,
    })
}

/// ISO 7064 mod 97-10 over an IBAN's characters (already without spaces).
pub(crate) fn iban_mod97(chars: &[u8]) -> bool {
    if chars.len() < 5 {
        return false;
    }
    let mut rem: u32 = 0;
    let rotated = chars[4..].iter().chain(chars[..4].iter());
    for &c in rotated {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        if v >= 10 {
            rem = (rem * 100 + v) % 97;
        } else {
            rem = (rem * 10 + v) % 97;
        }
    }
    rem == 1
}

/// IBAN: a known country, its registry length (trailing extra groups are cut) and mod-97.
pub(crate) fn iban(hay: &[u8], start: usize, end: usize) -> Option<usize> {
    let text = &hay[start..end];
    let len = iban_length(&text[..2])?;
    let mut chars = Vec::with_capacity(len);
    let mut cut = None;
    for (i, &b) in text.iter().enumerate() {
        if b == b' ' {
            continue;
        }
        chars.push(b);
        if chars.len() == len {
            cut = Some(i + 1);
            break;
        }
    }
    let cut = cut?;
    let abs = start + cut;
    if hay.get(abs).is_some_and(u8::is_ascii_alphanumeric) {
        return None;
    }
    iban_mod97(&chars).then_some(abs)
}

/// US SSN: area not 000/666/9xx, group not 00, serial not 0000.
pub(crate) fn ssn(hay: &[u8], start: usize, end: usize) -> Option<usize> {
    let digits: Vec<u8> = hay[start..end]
        .iter()
        .copied()
        .filter(u8::is_ascii_digit)
        .collect();
    if digits.len() != 9 {
        return None;
    }
    let area = &digits[..3];
    if area == b"000" || area == b"666" || area[0] == b'9' {
        return None;
    }
    if &digits[3..5] == b"00" || &digits[5..] == b"0000" {
        return None;
    }
    if hay.get(end) == Some(&b'-') || start > 0 && hay[start - 1] == b'-' {
        return None;
    }
    Some(end)
}

/// Phone: 8 to 15 digits (E.164), not glued to other digits or letters.
pub(crate) fn phone(hay: &[u8], start: usize, mut end: usize) -> Option<usize> {
    let opens = hay[start..end].iter().filter(|&&b| b == b'(').count();
    let closes = hay[start..end].iter().filter(|&&b| b == b')').count();
    if closes > opens && hay[end - 1] == b')' {
        end -= 1;
    }
    let n = hay[start..end]
        .iter()
        .filter(|b| b.is_ascii_digit())
        .count();
    if !(8..=15).contains(&n) {
        return None;
    }
    if start > 0 {
        let p = hay[start - 1];
        if p.is_ascii_alphanumeric() || p == b'+' || p == b'-' || p == b'.' || p == b'/' {
            return None;
        }
    }
    if let Some(&b) = hay.get(end)
        && (b.is_ascii_alphanumeric()
            || (b == b'-' || b == b'.' || b == b'/')
                && hay.get(end + 1).is_some_and(u8::is_ascii_digit))
    {
        return None;
    }
    Some(end)
}

/// IPv4: not part of a longer dotted sequence (versions, OIDs).
pub(crate) fn ipv4(hay: &[u8], start: usize, end: usize) -> Option<usize> {
    if start > 0 {
        let p = hay[start - 1];
        if p == b'.' || p.is_ascii_alphanumeric() {
            return None;
        }
    }
    if let Some(&b) = hay.get(end)
        && (b.is_ascii_alphanumeric()
            || b == b'.' && hay.get(end + 1).is_some_and(u8::is_ascii_digit))
    {
        return None;
    }
    Some(end)
}

/// IPv6: parses as an address, has at least one group of 3+ hex digits or is compressed with 2+
/// groups, and is not glued to other address characters.
pub(crate) fn ipv6(hay: &[u8], start: usize, mut end: usize) -> Option<usize> {
    if start > 0 {
        let p = hay[start - 1];
        if p.is_ascii_alphanumeric() || p == b':' || p == b'.' {
            return None;
        }
    }
    // a trailing single ':' (e.g. "addr: ") is punctuation, not part of the address
    while end > start + 2 && hay[end - 1] == b':' && hay[end - 2] != b':' {
        end -= 1;
    }
    if hay.get(end).is_some_and(u8::is_ascii_alphanumeric)
        || hay.get(end) == Some(&b'.') && hay.get(end + 1).is_some_and(u8::is_ascii_hexdigit)
    {
        return None;
    }
    let text = std::str::from_utf8(&hay[start..end]).ok()?;
    text.parse::<std::net::Ipv6Addr>().ok()?;
    let groups: Vec<&str> = text.split(':').filter(|g| !g.is_empty()).collect();
    let compressed = text.contains("::");
    let long_group = groups.iter().any(|g| g.len() >= 3);
    let ok = if compressed {
        (groups.len() >= 2 && long_group) || text == "::1" || groups.len() >= 3
    } else {
        groups.len() == 8
    };
    ok.then_some(end)
}

/// JWT: the first segment decodes (base64url) to a JSON object with `alg`.
pub(crate) fn jwt(hay: &[u8], start: usize, end: usize) -> Option<usize> {
    let text = &hay[start..end];
    let dot = memchr::memchr(b'.', text)?;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&text[..dot])
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&header).ok()?;
    v.get("alg")?;
    Some(end)
}

/// Shannon entropy in bits per byte.
pub(crate) fn entropy(s: &[u8]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in s {
        counts[b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Character-class mix of a candidate secret: (has lower, has upper, has digit).
pub(crate) fn mix(s: &[u8]) -> (bool, bool, bool) {
    let mut m = (false, false, false);
    for &b in s {
        m.0 |= b.is_ascii_lowercase();
        m.1 |= b.is_ascii_uppercase();
        m.2 |= b.is_ascii_digit();
    }
    m
}

/// Whether any of `words` (lower-case ASCII) occurs in `window`, case-insensitively.
pub(crate) fn has_context(window: &[u8], words: &[String]) -> bool {
    if words.is_empty() {
        return false;
    }
    let lower: Vec<u8> = window.iter().map(u8::to_ascii_lowercase).collect();
    words
        .iter()
        .any(|w| memchr::memmem::find(&lower, w.as_bytes()).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_known_values() {
        assert!(luhn(b"4111111111111111"));
        assert!(!luhn(b"4111111111111112"));
        assert!(luhn(b"378282246310005"));
    }

    #[test]
    fn iban_known_values() {
        assert!(iban_mod97(b"DE89370400440532013000"));
        assert!(iban_mod97(b"GB82WEST12345698765432"));
        assert!(!iban_mod97(b"DE89370400440532013001"));
        let hay = b"iban DE89 3704 0044 0532 0130 00 EUR";
        assert_eq!(iban(hay, 5, hay.len()), Some(32));
    }

    #[test]
    fn card_trims_trailing_groups() {
        let hay = b"4111 1111 1111 1111 2024";
        assert_eq!(card(hay, 0, hay.len()), Some(19));
    }

    #[test]
    fn entropy_orders() {
        assert!(entropy(b"aaaaaaaa") < 0.1);
        assert!(entropy(b"aZ3kQ9xP2mL7vB1n") > 3.5);
    }
}
