//! Each loaded bundle in the OpenAPI document: its request and response as JSON Schema
//! components, and concrete paths `/v1/predict/<name>` and `/v1/predict/<name>/batch` that
//! refer to them. Built from the field specs the bundle's plugin describes (the same ones
//! `/v1/bundles` lists and the plugin validates with), at each request for the document, so
//! the document follows activations and removals.
//!
//! The schemas say what the plugin enforces, no more and no less: a request valid by its
//! component is accepted, one that breaks it is refused with a 4xx.

use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{
    AdditionalProperties, AnyOfBuilder, ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::{ContentBuilder, HttpMethod, OpenApi, Ref, RefOr, ResponseBuilder};

use crate::bundle::BundleSummary;
use crate::plugin::{FieldSpec, FieldType};

/// The generic operations the concrete ones are copied from (their security, tags and
/// error answers stay as the router's table made them).
const PREDICT: &str = "/v1/predict/{bundle}";
const PREDICT_BATCH: &str = "/v1/predict/{bundle}/batch";

/// Adds every bundle in `bundles` to `doc`: components `<Name>Request`, `<Name>Outputs`,
/// `<Name>Response`, `<Name>BatchRequest`, `<Name>BatchResponse`, and its two paths.
/// `max_batch` is `server.max_batch`, the most instances a batch may hold.
pub fn add_bundles(doc: &mut OpenApi, bundles: &[BundleSummary], max_batch: usize) {
    let operation = |path: &str| doc.paths.paths.get(path).and_then(|item| item.post.clone());
    let (Some(predict), Some(batch)) = (operation(PREDICT), operation(PREDICT_BATCH)) else {
        tracing::error!("the OpenAPI document lacks the generic predict operations; bundle paths left out");
        return;
    };
    // The generic batch's limits are configuration, which its derived schema cannot know.
    let schemas = &mut doc.components.get_or_insert_with(Default::default).schemas;
    schemas.insert("BatchRequest".to_owned(), batch_request_schema(None, max_batch).into());
    for bundle in bundles {
        let base = component_base(&bundle.name);
        let name = |suffix: &str| format!("{base}{suffix}");
        let schemas = &mut doc.components.get_or_insert_with(Default::default).schemas;
        schemas.insert(name("Request"), request_schema(bundle).into());
        schemas.insert(name("Outputs"), outputs_schema(bundle).into());
        schemas.insert(name("Response"), response_schema(bundle, &name("Outputs")).into());
        schemas.insert(name("BatchRequest"), batch_request_schema(Some(&name("Request")), max_batch).into());
        schemas.insert(name("BatchResponse"), batch_response_schema(bundle, &name("Outputs")).into());

        let concrete = |generic: &Operation, suffix: &str, summary: String| {
            let mut operation = generic.clone();
            // The bundle is in the path itself: of the generic operation's parameters only the
            // query's stay (`explain`, offered when the bundle can explain).
            operation.parameters = generic.parameters.as_ref().map(|parameters| {
                parameters
                    .iter()
                    .filter(|p| match p {
                        RefOr::T(p) => {
                            p.parameter_in == ParameterIn::Query && (bundle.explainable || p.name != "explain")
                        }
                        RefOr::Ref(_) => false,
                    })
                    .cloned()
                    .collect()
            });
            if operation.parameters.as_ref().is_some_and(Vec::is_empty) {
                operation.parameters = None;
            }
            operation.operation_id =
                Some(format!("{}_{}", generic.operation_id.as_deref().unwrap_or("predict"), bundle.name));
            operation.summary = Some(summary);
            operation.description = (!bundle.description.is_empty()).then(|| bundle.description.clone());
            operation.request_body = Some(RefOr::T(
                RequestBodyBuilder::new()
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name(name(&format!("{suffix}Request")))))
                            .build(),
                    )
                    .required(Some(utoipa::openapi::Required::True))
                    .build(),
            ));
            operation.responses.responses.insert(
                "200".to_owned(),
                RefOr::T(
                    ResponseBuilder::new()
                        .description(format!("The {} answer", bundle.name))
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name(name(&format!("{suffix}Response")))))
                                .build(),
                        )
                        .build(),
                ),
            );
            operation
        };
        let single = concrete(&predict, "", format!("One {} prediction", bundle.name));
        let many = concrete(&batch, "Batch", format!("Several {} predictions in one model run", bundle.name));
        doc.paths.paths.insert(format!("/v1/predict/{}", bundle.name), PathItem::new(HttpMethod::Post, single));
        doc.paths.paths.insert(format!("/v1/predict/{}/batch", bundle.name), PathItem::new(HttpMethod::Post, many));
    }
}

/// A component name from a bundle name (lowercase letters, digits, '-' and '_'): `car-price`
/// gives `CarPrice`. A '-' is dropped only before a letter, which it capitalises, so two
/// bundle names never give the same component name (`a-1` stays `A-1`, `a1` is `A1`).
pub fn component_base(bundle: &str) -> String {
    let mut base = String::with_capacity(bundle.len());
    let mut capitalise = true;
    let mut chars = bundle.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '-' && chars.peek().is_some_and(char::is_ascii_lowercase) {
            capitalise = true;
            continue;
        }
        base.push(if capitalise { c.to_ascii_uppercase() } else { c });
        capitalise = false;
    }
    base
}

/// The request object: each described field, the required ones listed, and no other key
/// (the SDK's `Request::parse` refuses a field the plugin did not declare).
fn request_schema(bundle: &BundleSummary) -> Schema {
    let mut object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .title(Some(format!("{} request", bundle.name)))
        .description(Some(format!(
            "What /v1/predict/{} takes (bundle version {}).",
            bundle.name, bundle.active_version
        )))
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)));
    for field in &bundle.inputs {
        object = object.property(&field.name, field_schema(field));
        if field.required {
            object = object.required(&field.name);
        }
    }
    object.build().into()
}

/// One field: its JSON type, bounds, vocabulary, unit and default.
fn field_schema(field: &FieldSpec) -> Schema {
    let mut description = field.description.clone();
    if let Some(unit) = &field.unit {
        description.push_str(&format!(" ({unit})"));
    }
    let default = field.default.clone();
    let unit = field
        .unit
        .as_ref()
        .map(|unit| utoipa::openapi::extensions::ExtensionsBuilder::new().add("x-unit", unit.clone()).build());
    match field.field_type {
        FieldType::Number | FieldType::Integer | FieldType::Boolean | FieldType::Text | FieldType::Category => {
            if field.field_type == FieldType::Category {
                description.push_str("; matched without regard to ASCII case");
            }
            scalar(field, field.field_type)
                .description(Some(description))
                .default(default)
                .extensions(unit)
                .build()
                .into()
        }
        FieldType::NumberList | FieldType::IntegerList => {
            let element =
                if field.field_type == FieldType::NumberList { FieldType::Number } else { FieldType::Integer };
            description.push_str("; the bounds apply to each value");
            ArrayBuilder::new()
                .items(RefOr::T(Schema::from(scalar(field, element).build())))
                .max_items(field.max_items.map(|max| max as usize))
                .description(Some(description))
                .default(default)
                .extensions(unit)
                .build()
                .into()
        }
    }
}

/// A scalar of `kind` with the field's bounds and vocabulary.
fn scalar(field: &FieldSpec, kind: FieldType) -> ObjectBuilder {
    match kind {
        FieldType::Integer => {
            // The SDK reads whole numbers into an i64, so that is the widest range it takes.
            let bound = |value: Option<f64>, limit: i64| value.map_or(limit, |value| value as i64) as isize;
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(bound(field.minimum, i64::MIN)))
                .maximum(Some(bound(field.maximum, i64::MAX)))
        }
        FieldType::Number => {
            ObjectBuilder::new().schema_type(Type::Number).minimum(field.minimum).maximum(field.maximum)
        }
        FieldType::Boolean => ObjectBuilder::new().schema_type(Type::Boolean),
        FieldType::Category => {
            ObjectBuilder::new().schema_type(Type::String).enum_values(Some(field.categories.iter().cloned()))
        }
        FieldType::Text | FieldType::NumberList | FieldType::IntegerList => {
            ObjectBuilder::new().schema_type(Type::String)
        }
    }
}

/// The `outputs` object: each output the plugin declares, described. Plugins declare
/// outputs by name, description and unit only, not their JSON type, and may add more
/// (car-price adds `currency`), so no type is claimed and other keys are allowed.
fn outputs_schema(bundle: &BundleSummary) -> Schema {
    let mut object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .title(Some(format!("{} outputs", bundle.name)))
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(true)));
    for output in &bundle.outputs {
        let mut description = output.description.clone();
        if let Some(unit) = &output.unit {
            description.push_str(&format!(" ({unit})"));
        }
        object = object.property(
            &output.name,
            ObjectBuilder::new().schema_type(SchemaType::AnyValue).description(Some(description)),
        );
    }
    object.build().into()
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn response_schema(bundle: &BundleSummary, outputs: &str) -> Schema {
    let mut schema = ObjectBuilder::new()
        .schema_type(Type::Object)
        .title(Some(format!("{} response", bundle.name)))
        .property(
            "prediction_id",
            string().description(Some("Time-ordered id (UUIDv7); the stored record is at /v1/predictions/{id}")),
        )
        .property("bundle", string().enum_values(Some([bundle.name.clone()])))
        .property("version", string().description(Some("The bundle version that answered")))
        .property("outputs", Ref::from_schema_name(outputs))
        .property("latency_ms", ObjectBuilder::new().schema_type(Type::Number));
    if bundle.explainable {
        schema = schema.property("explanation", Ref::from_schema_name("Explanation"));
    }
    schema
        .required("prediction_id")
        .required("bundle")
        .required("version")
        .required("outputs")
        .required("latency_ms")
        .build()
        .into()
}

/// A batch: 1 to `max_batch` instances. An instance that breaks the request's rules does
/// not refuse the batch; it is answered at its index with its error. So an instance may be
/// any JSON value; for a bundle, `anyOf` says so while pointing clients (and Swagger UI's
/// example) at its `request` component.
fn batch_request_schema(request: Option<&str>, max_batch: usize) -> Schema {
    let any = ObjectBuilder::new().schema_type(SchemaType::AnyValue);
    let instance: Schema = match request {
        Some(request) => AnyOfBuilder::new()
            .item(Ref::from_schema_name(request))
            .item(any)
            .description(Some(format!(
                "Each a {request}; one that breaks its rules is answered at its index with an error, not refused"
            )))
            .build()
            .into(),
        None => any
            .description(Some("Each what the bundle's /v1/predict takes; one it refuses is answered at its index"))
            .build()
            .into(),
    };
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "instances",
            ArrayBuilder::new().items(RefOr::T(instance)).min_items(Some(1)).max_items(Some(max_batch)),
        )
        .required("instances")
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
        .build()
        .into()
}

fn batch_response_schema(bundle: &BundleSummary, outputs: &str) -> Schema {
    let item = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some("Either `prediction_id` and `outputs`, or `error`"))
        .property("index", ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)))
        .property("prediction_id", string())
        .property("outputs", Ref::from_schema_name(outputs))
        .property("error", Ref::from_schema_name("ErrorDetail"));
    let item =
        if bundle.explainable { item.property("explanation", Ref::from_schema_name("Explanation")) } else { item }
            .required("index");
    let count = || ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .title(Some(format!("{} batch response", bundle.name)))
        .property("bundle", string().enum_values(Some([bundle.name.clone()])))
        .property("version", string())
        .property("predictions", ArrayBuilder::new().items(RefOr::T(Schema::from(item.build()))))
        .property("succeeded", count())
        .property("failed", count())
        .property("latency_ms", ObjectBuilder::new().schema_type(Type::Number))
        .required("bundle")
        .required("version")
        .required("predictions")
        .required("succeeded")
        .required("failed")
        .required("latency_ms")
        .build()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_names_are_distinct_and_legal() {
        assert_eq!(component_base("car-price"), "CarPrice");
        assert_eq!(component_base("iris"), "Iris");
        assert_eq!(component_base("car_price"), "Car_price");
        assert_ne!(component_base("a-1"), component_base("a1"));
        assert_ne!(component_base("ab-c"), component_base("a-bc"));
        let legal = |name: &str| name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        assert!(["car-price", "a-1", "x_y-z9"].iter().all(|name| legal(&component_base(name))));
    }
}
