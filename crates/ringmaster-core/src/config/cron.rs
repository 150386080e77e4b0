//! `cron="m h dom mon dow"` (a ringmaster extension for EVENTS): five fields of numbers,
//! `*`, ranges `a-b`, lists `a,b`, steps `*/n` and `a-b/n`, month and weekday names.

use super::model::CronSpec;

/// Why a cron spec is bad: character offset into the spec, and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError {
    pub offset: usize,
    pub message: String,
}

struct Field {
    what: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

const FIELDS: [Field; 5] = [
    Field {
        what: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        what: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        what: "day of month",
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        what: "month",
        min: 1,
        max: 12,
        names: MONTHS,
    },
    Field {
        what: "day of week",
        min: 0,
        max: 7,
        names: DAYS,
    },
];

/// Parses a five-field cron spec.
pub fn parse_cron(text: &str) -> Result<CronSpec, CronError> {
    let mut fields: Vec<(usize, &str)> = Vec::new();
    // Split on whitespace, remembering character offsets.
    let chars: Vec<char> = text.chars().collect();
    let mut start: Option<usize> = None;
    let mut byte_starts = Vec::with_capacity(chars.len() + 1);
    for (b, _) in text.char_indices() {
        byte_starts.push(b);
    }
    byte_starts.push(text.len());
    for (i, c) in chars.iter().enumerate() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                fields.push((s, &text[byte_starts[s]..byte_starts[i]]));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        fields.push((s, &text[byte_starts[s]..]));
    }
    if fields.len() != 5 {
        return Err(CronError {
            offset: fields.get(5).map(|f| f.0).unwrap_or(chars.len()),
            message: format!(
                "cron spec has {} field{}, expected 5 (minute hour day-of-month month day-of-week)",
                fields.len(),
                if fields.len() == 1 { "" } else { "s" }
            ),
        });
    }
    let mut bits = [0u64; 5];
    for (n, (field_offset, field_text)) in fields.iter().enumerate() {
        bits[n] = parse_field(field_text, &FIELDS[n]).map_err(|(o, m)| CronError {
            offset: field_offset + o,
            message: m,
        })?;
    }
    // Sunday may be written 0 or 7.
    let mut dow = bits[4];
    if dow & (1 << 7) != 0 {
        dow = (dow | 1) & 0x7f;
    }
    Ok(CronSpec {
        minutes: bits[0],
        hours: bits[1] as u32,
        days_of_month: bits[2] as u32,
        months: bits[3] as u16,
        days_of_week: dow as u8,
        any_day_of_month: fields[2].1.starts_with('*'),
        any_day_of_week: fields[4].1.starts_with('*'),
        text: text.split_whitespace().collect::<Vec<_>>().join(" "),
    })
}

fn parse_field(text: &str, field: &Field) -> Result<u64, (usize, String)> {
    let mut bits = 0u64;
    let mut offset = 0;
    for item in text.split(',') {
        bits |= parse_item(item, field).map_err(|(o, m)| (offset + o, m))?;
        offset += item.chars().count() + 1;
    }
    Ok(bits)
}

fn parse_item(item: &str, field: &Field) -> Result<u64, (usize, String)> {
    if item.is_empty() {
        return Err((0, format!("empty item in {} field", field.what)));
    }
    let (range, step) = match item.split_once('/') {
        Some((r, s)) => {
            let at = r.chars().count() + 1;
            let step = s
                .parse::<u32>()
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| (at, format!("bad step `{s}` in {} field", field.what)))?;
            (r, step)
        }
        None => (item, 1),
    };
    let (lo, hi) = if range == "*" {
        (field.min, field.max)
    } else if let Some((a, b)) = range.split_once('-') {
        let lo = value(a, field).map_err(|m| (0, m))?;
        let hi = value(b, field).map_err(|m| (a.chars().count() + 1, m))?;
        if hi < lo {
            return Err((
                0,
                format!("backwards range `{range}` in {} field", field.what),
            ));
        }
        (lo, hi)
    } else {
        let v = value(range, field).map_err(|m| (0, m))?;
        if step > 1 {
            (v, field.max)
        } else {
            (v, v)
        }
    };
    let mut bits = 0u64;
    let mut v = lo;
    while v <= hi {
        bits |= 1 << v;
        match v.checked_add(step) {
            Some(next) => v = next,
            None => break,
        }
    }
    Ok(bits)
}

fn value(text: &str, field: &Field) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = field.names.iter().position(|&n| n == lower) {
        return Ok(i as u32 + field.min);
    }
    match text.parse::<u32>() {
        Ok(v)
            if (field.min..=field.max).contains(&v) && text.chars().all(|c| c.is_ascii_digit()) =>
        {
            Ok(v)
        }
        Ok(_) => Err(format!(
            "{} `{text}` is out of range ({}-{})",
            field.what, field.min, field.max
        )),
        Err(_) => Err(format!("bad {} `{text}`", field.what)),
    }
}

/// Says a cron spec in words, for `check`'s summary.
pub fn describe(spec: &CronSpec) -> String {
    format!("cron \"{}\"", spec.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_five_minutes() {
        let s = parse_cron("*/5 * * * *").unwrap();
        assert_eq!(s.minutes.count_ones(), 12);
        assert_eq!(s.minutes & 1, 1);
        assert_eq!(s.minutes & (1 << 55), 1 << 55);
        assert_eq!(s.hours, (1 << 24) - 1);
        assert!(s.any_day_of_month && s.any_day_of_week);
        assert_eq!(s.days_of_month, ((1u64 << 32) - 2) as u32);
        assert_eq!(s.months, ((1 << 13) - 2) as u16);
        assert_eq!(s.days_of_week, 0x7f);
    }

    #[test]
    fn lists_ranges_names() {
        let s = parse_cron("0,30 4-6 1,15 jan-mar mon-fri").unwrap();
        assert_eq!(s.minutes, 1 | (1 << 30));
        assert_eq!(s.hours, 0b111 << 4);
        assert_eq!(s.days_of_month, (1 << 1) | (1 << 15));
        assert_eq!(s.months, 0b1110);
        assert_eq!(s.days_of_week, 0b0111110);
        assert!(!s.any_day_of_month && !s.any_day_of_week);
    }

    #[test]
    fn sunday_is_zero_or_seven() {
        assert_eq!(parse_cron("0 0 * * 7").unwrap().days_of_week, 1);
        assert_eq!(parse_cron("0 0 * * SUN").unwrap().days_of_week, 1);
        assert_eq!(parse_cron("0 0 * * 5-7").unwrap().days_of_week, 0b1100001);
    }

    #[test]
    fn errors_point_into_the_spec() {
        let e = parse_cron("0 24 * * *").unwrap_err();
        assert_eq!(e.offset, 2);
        assert_eq!(e.message, "hour `24` is out of range (0-23)");
        let e = parse_cron("0 0 * * * *").unwrap_err();
        assert_eq!(e.offset, 10);
        let e = parse_cron("0 0 * 5-1 *").unwrap_err();
        assert!(e.message.starts_with("backwards range"));
        let e = parse_cron("*/0 * * * *").unwrap_err();
        assert_eq!(e.offset, 2);
        let e = parse_cron("1,,2 * * * *").unwrap_err();
        assert_eq!(e.offset, 2);
        assert!(parse_cron("").is_err());
        assert!(parse_cron("x * * * *").is_err());
        assert!(parse_cron("+1 * * * *").is_err());
    }
}
