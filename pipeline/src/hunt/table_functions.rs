//! The named hunts as table functions: `SELECT * FROM exec_sessions('mallory@contoso.com')`.
//! Arguments are the hunt's parameters in the order `crowsnest hunt --list` shows, as string
//! literals; those left out take their defaults. The name is the hunt's, with `_` for `-`.
//!
//! A table function must give its schema before it runs, so each hunt is planned once when it
//! is registered (with its defaults, or empty strings; parameters are string literals, so their
//! values never change the schema) and planned again with the caller's values when scanned.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{plan_err, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use super::library::{Hunt, Library};

/// The SQL name of a hunt.
pub fn function_name(hunt: &str) -> String {
    hunt.replace('-', "_")
}

/// Registers every hunt of `lib` in `ctx`.
pub async fn register(ctx: &SessionContext, lib: &Library) -> anyhow::Result<()> {
    for hunt in &lib.hunts {
        let placeholder: std::collections::BTreeMap<String, String> =
            hunt.params.iter().map(|p| (p.name.clone(), p.default.clone().unwrap_or_default())).collect();
        let sql = hunt.render(&placeholder)?;
        let df = ctx.sql(&sql).await.map_err(|e| anyhow::anyhow!("hunt {} does not plan: {e}", hunt.name))?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        ctx.register_udtf(&function_name(&hunt.name), Arc::new(HuntFunction { hunt: hunt.clone(), schema }));
    }
    Ok(())
}

#[derive(Debug)]
struct HuntFunction {
    hunt: Hunt,
    schema: SchemaRef,
}

impl TableFunctionImpl for HuntFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.len() > self.hunt.params.len() {
            return plan_err!(
                "{}() takes at most {} argument(s): {}",
                function_name(&self.hunt.name),
                self.hunt.params.len(),
                self.hunt.params.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
        let mut given = std::collections::BTreeMap::new();
        for (p, e) in self.hunt.params.iter().zip(exprs) {
            let value = match e {
                Expr::Literal(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)), _) => {
                    s.clone()
                }
                Expr::Literal(v, _) if !v.is_null() => v.to_string(),
                _ => {
                    return plan_err!(
                        "{}(): argument {} ({}) must be a literal",
                        function_name(&self.hunt.name),
                        p.name,
                        p.description.trim()
                    )
                }
            };
            given.insert(p.name.clone(), value);
        }
        let sql = self.hunt.render(&given).map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
        Ok(Arc::new(HuntTable { sql, schema: self.schema.clone() }))
    }
}

/// One call of a hunt, planned when scanned.
#[derive(Debug)]
struct HuntTable {
    sql: String,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for HuntTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(state) = state.as_any().downcast_ref::<SessionState>() else {
            return plan_err!("hunts run in a DataFusion session");
        };
        let plan = state.create_logical_plan(&self.sql).await?;
        // The library's SQL with quoted values; checked like a client's statement all the same.
        super::session::read_only().verify_plan(&plan)?;
        let plan = state.create_physical_plan(&plan).await?;
        let Some(projection) = projection else { return Ok(plan) };
        let input = plan.schema();
        let columns = projection.iter().map(|&i| {
            let name = input.field(i).name().clone();
            (Arc::new(Column::new(&name, i)) as Arc<dyn datafusion::physical_expr::PhysicalExpr>, name)
        });
        Ok(Arc::new(ProjectionExec::try_new(columns, plan)?))
    }
}
