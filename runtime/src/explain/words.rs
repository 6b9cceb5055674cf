//! An explanation in words a kiosk can show: the value, the baseline, the fields that move
//! it most, and how each forecast row follows from today.

use std::fmt::Write;

use serde_json::Value;

use super::trees::OutputScale;
use super::{Explanation, Vocabulary};

/// How many fields the text names; the rest are summed into one phrase.
const NAMED_FIELDS: usize = 4;

pub(super) fn describe(explanation: &Explanation, vocabulary: &Vocabulary, scale: Option<&OutputScale>) -> String {
    let unit = vocabulary.output_unit.as_deref();
    let mut text = format!(
        "Valued at {}. Compared with the average in training ({}): ",
        money(explanation.value, unit),
        money(explanation.baseline, unit)
    );
    let phrases: Vec<String> = explanation
        .contributions
        .iter()
        .take(NAMED_FIELDS)
        .map(|c| {
            let unit =
                vocabulary.field_units.iter().find(|(field, _)| *field == c.field).map(|(_, unit)| unit.as_str());
            format!("{} {}", field_with_value(&c.field, &c.value, unit), effect(c.contribution, unit_of(vocabulary)))
        })
        .collect();
    text.push_str(&phrases.join("; "));
    let rest = &explanation.contributions[explanation.contributions.len().min(NAMED_FIELDS)..];
    if !rest.is_empty() {
        let sum: f64 = rest.iter().map(|c| c.contribution).sum();
        let together =
            if sum < 0.0 { format!("lower it by {}", money(-sum, unit)) } else { format!("add {}", money(sum, unit)) };
        let _ = write!(text, "; the other {} fields together {together}", rest.len());
    }
    text.push('.');

    let label = scale.map_or("the scale", |scale| if scale.label.is_empty() { "the scale" } else { &scale.label });
    let scale_unit = scale.map_or("", |scale| scale.unit.as_str());
    for step in &explanation.forecast {
        let _ = write!(
            text,
            " In {}{}: {}, {} {} than now: {} {}",
            number(step.scale_input),
            match scale_unit {
                "" => String::new(),
                unit if step.scale_input == 1.0 => format!(" {}", unit.strip_suffix('s').unwrap_or(unit)),
                unit => format!(" {unit}"),
            },
            money(step.value, unit),
            money(step.change.abs(), unit),
            if step.change < 0.0 { "less" } else { "more" },
            label,
            takes_or_adds(step.from_scale, unit),
        );
        if !step.changed.is_empty() {
            let changed: Vec<String> = step
                .changed
                .iter()
                .map(|(field, value)| {
                    let field_unit =
                        vocabulary.field_units.iter().find(|(name, _)| name == field).map(|(_, unit)| unit.as_str());
                    field_with_value(field, value, field_unit)
                })
                .collect();
            let _ = write!(text, " and {} {}", changed.join(", "), takes_or_adds(step.from_inputs, unit));
        }
        text.push('.');
    }
    text
}

fn unit_of(vocabulary: &Vocabulary) -> Option<&str> {
    vocabulary.output_unit.as_deref()
}

fn effect(amount: f64, unit: Option<&str>) -> String {
    if amount < 0.0 {
        format!("lowers it by {}", money(-amount, unit))
    } else {
        format!("adds {}", money(amount, unit))
    }
}

fn takes_or_adds(amount: f64, unit: Option<&str>) -> String {
    if amount < 0.0 { format!("takes {}", money(-amount, unit)) } else { format!("adds {}", money(amount, unit)) }
}

/// "mileage 38,000 mi", "make cadillac", "leather yes".
fn field_with_value(field: &str, value: &Value, unit: Option<&str>) -> String {
    let shown = match value {
        Value::Bool(true) => "yes".to_owned(),
        Value::Bool(false) => "no".to_owned(),
        Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), number),
        Value::String(s) => s.replace('_', " "),
        Value::Null => "(none)".to_owned(),
        other => other.to_string(),
    };
    let unit = match (value, unit) {
        (Value::Number(_), Some(unit)) => format!(" {unit}"),
        _ => String::new(),
    };
    format!("{} {shown}{unit}", field.replace('_', " "))
}

/// An amount in the output's unit: "$1,830" for USD, whole units from 10 up.
fn money(amount: f64, unit: Option<&str>) -> String {
    let sign = if amount < 0.0 { "-" } else { "" };
    let digits = if amount.abs() >= 10.0 { grouped(amount.abs().round()) } else { format!("{:.2}", amount.abs()) };
    match unit {
        Some("USD") => format!("{sign}${digits}"),
        Some(unit) => format!("{sign}{digits} {unit}"),
        None => format!("{sign}{digits}"),
    }
}

/// A value as people write it: "38,000", "2.5", "0.25".
fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        let sign = if value < 0.0 { "-" } else { "" };
        return format!("{sign}{}", grouped(value.abs()));
    }
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A non-negative whole number with thousands separators.
fn grouped(whole: f64) -> String {
    let digits = format!("{whole:.0}");
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn amounts_and_values_read_as_people_write_them() {
        assert_eq!(money(21450.4, Some("USD")), "$21,450");
        assert_eq!(money(-1830.0, Some("USD")), "-$1,830");
        assert_eq!(money(4.256, Some("USD")), "$4.26");
        assert_eq!(money(1234.0, Some("EUR")), "1,234 EUR");
        assert_eq!(number(38000.0), "38,000");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(2.5), "2.5");
        assert_eq!(field_with_value("mileage", &json!(38000), Some("mi")), "mileage 38,000 mi");
        assert_eq!(field_with_value("leather", &json!(true), None), "leather yes");
        assert_eq!(
            field_with_value("overall_condition", &json!("above_average"), None),
            "overall condition above average"
        );
    }
}
