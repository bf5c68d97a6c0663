//! What a Flight SQL client asks before its first query: the server's SqlInfo, the types it
//! speaks (JDBC's getTypeInfo), and catalogs, schemas, tables and table types for navigators
//! (DBeaver's tree, ADBC's get_objects). All answers come from the hunt session's catalog.

use std::sync::OnceLock;

use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder};
use arrow_flight::sql::{
    CommandGetDbSchemas, CommandGetTables, Nullable, Searchable, SqlInfo, SqlNullOrdering, SqlSupportedCaseSensitivity, XdbcDataType,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::datasource::TableType;
use datafusion::prelude::SessionContext;

/// Tables named so are the catalog's plumbing (the lake's listing tables under their views).
pub fn hidden(table: &str) -> bool {
    table.starts_with("__")
}

/// The server's answers to GetSqlInfo. Transactions are not advertised: ADBC would then open
/// one on connect.
pub fn sql_info() -> &'static SqlInfoData {
    static DATA: OnceLock<SqlInfoData> = OnceLock::new();
    DATA.get_or_init(|| {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "Crowsnest");
        b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        b.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
        b.append(SqlInfo::FlightSqlServerReadOnly, true);
        b.append(SqlInfo::FlightSqlServerSql, true);
        b.append(SqlInfo::FlightSqlServerSubstrait, false);
        b.append(SqlInfo::FlightSqlServerTransaction, 0i32); // SQL_SUPPORTED_TRANSACTION_NONE
        b.append(SqlInfo::FlightSqlServerCancel, false);
        b.append(SqlInfo::SqlDdlCatalog, false);
        b.append(SqlInfo::SqlDdlSchema, false);
        b.append(SqlInfo::SqlDdlTable, false);
        // Identifiers keep their case (TimeGenerated, PodName), quoted or not.
        b.append(SqlInfo::SqlIdentifierCase, SqlSupportedCaseSensitivity::SqlCaseSensitivityUnknown as i32);
        b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        b.append(SqlInfo::SqlQuotedIdentifierCase, SqlSupportedCaseSensitivity::SqlCaseSensitivityUnknown as i32);
        b.append(SqlInfo::SqlAllTablesAreSelectable, true);
        b.append(SqlInfo::SqlNullOrdering, SqlNullOrdering::SqlNullsSortedHigh as i32);
        b.append(SqlInfo::SqlKeywords, &[] as &[&str]);
        b.append(SqlInfo::SqlNumericFunctions, &["abs", "ceil", "floor", "round", "power", "sqrt", "ln", "log10"] as &[&str]);
        b.append(
            SqlInfo::SqlStringFunctions,
            &["lower", "upper", "trim", "substr", "strpos", "split_part", "regexp_replace", "regexp_like", "concat"] as &[&str],
        );
        b.append(SqlInfo::SqlSystemFunctions, &[] as &[&str]);
        b.append(SqlInfo::SqlDatetimeFunctions, &["now", "date_bin", "date_trunc", "date_part", "to_timestamp"] as &[&str]);
        b.append(SqlInfo::SqlSearchStringEscape, "\\");
        b.append(SqlInfo::SqlExtraNameCharacters, "");
        b.append(SqlInfo::SqlSupportsColumnAliasing, true);
        b.append(SqlInfo::SqlNullPlusNullIsNull, true);
        b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
        b.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, false);
        b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
        b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
        b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
        b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
        b.append(SqlInfo::SqlSupportsIntegrityEnhancementFacility, false);
        b.append(SqlInfo::SqlSchemaTerm, "schema");
        b.append(SqlInfo::SqlProcedureTerm, "procedure");
        b.append(SqlInfo::SqlCatalogTerm, "catalog");
        b.append(SqlInfo::SqlCatalogAtStart, true);
        b.append(SqlInfo::SqlSelectForUpdateSupported, false);
        b.append(SqlInfo::SqlStoredProceduresSupported, false);
        b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
        b.append(SqlInfo::SqlTransactionsSupported, false);
        b.append(SqlInfo::SqlBatchUpdatesSupported, false);
        b.append(SqlInfo::SqlSavepointsSupported, false);
        b.append(SqlInfo::SqlNamedParametersSupported, false);
        b.append(SqlInfo::SqlLocatorsUpdateCopy, false);
        b.append(SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported, false);
        b.append(SqlInfo::SqlMaxColumnNameLength, 0i64);
        b.append(SqlInfo::SqlMaxStatementLength, 0i64);
        b.build().expect("a valid SqlInfo table")
    })
}

/// The types results use, for JDBC's getTypeInfo.
pub fn type_info() -> &'static XdbcTypeInfoData {
    static DATA: OnceLock<XdbcTypeInfoData> = OnceLock::new();
    DATA.get_or_init(|| {
        let mut b = XdbcTypeInfoDataBuilder::new();
        let ty = |name: &str, t: XdbcDataType, size: Option<i32>, prefix: Option<&str>| XdbcTypeInfo {
            type_name: name.into(),
            data_type: t,
            column_size: size,
            literal_prefix: prefix.map(String::from),
            literal_suffix: prefix.map(String::from),
            create_params: None,
            nullable: Nullable::NullabilityNullable,
            case_sensitive: prefix.is_some(),
            searchable: Searchable::Full,
            unsigned_attribute: Some(false),
            fixed_prec_scale: false,
            auto_increment: Some(false),
            local_type_name: Some(name.into()),
            minimum_scale: None,
            maximum_scale: None,
            sql_data_type: t,
            datetime_subcode: None,
            num_prec_radix: size.is_some().then_some(10),
            interval_precision: None,
        };
        // Sorted by data type, as JDBC wants them.
        b.append(ty("BIGINT", XdbcDataType::XdbcBigint, Some(19), None));
        b.append(ty("TINYINT", XdbcDataType::XdbcTinyint, Some(3), None));
        b.append(ty("BOOLEAN", XdbcDataType::XdbcBit, None, None));
        b.append(ty("BINARY", XdbcDataType::XdbcBinary, None, None));
        b.append(ty("VARCHAR", XdbcDataType::XdbcVarchar, None, Some("'")));
        b.append(ty("INTEGER", XdbcDataType::XdbcInteger, Some(10), None));
        b.append(ty("SMALLINT", XdbcDataType::XdbcSmallint, Some(5), None));
        b.append(ty("FLOAT", XdbcDataType::XdbcFloat, Some(7), None));
        b.append(ty("DOUBLE", XdbcDataType::XdbcDouble, Some(15), None));
        b.append(ty("DATE", XdbcDataType::XdbcDate, None, None));
        b.append(ty("TIMESTAMP", XdbcDataType::XdbcTimestamp, None, None));
        b.build().expect("a valid type table")
    })
}

/// `(catalog, schema)` of every schema the session has.
fn schemas(ctx: &SessionContext) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for c in ctx.catalog_names() {
        if let Some(catalog) = ctx.catalog(&c) {
            for s in catalog.schema_names() {
                out.push((c.clone(), s));
            }
        }
    }
    out
}

pub fn db_schemas(ctx: &SessionContext, query: CommandGetDbSchemas) -> Result<RecordBatch, FlightError> {
    let mut b = query.into_builder();
    for (c, s) in schemas(ctx) {
        b.append(c, s);
    }
    b.build()
}

pub async fn tables(ctx: &SessionContext, query: CommandGetTables) -> datafusion::error::Result<RecordBatch> {
    let mut b = query.into_builder();
    for (c, s) in schemas(ctx) {
        let Some(schema) = ctx.catalog(&c).and_then(|cat| cat.schema(&s)) else { continue };
        let mut names = schema.table_names();
        names.sort();
        for name in names.into_iter().filter(|n| !hidden(n)) {
            let Some(table) = schema.table(&name).await? else { continue };
            let kind = match table.table_type() {
                TableType::Base => "TABLE",
                TableType::View => "VIEW",
                TableType::Temporary => "LOCAL TEMPORARY",
            };
            // As results are sent: clients that cannot read view types cannot read them here.
            b.append(&c, &s, &name, kind, super::wire::schema(&table.schema()).as_ref())
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        }
    }
    b.build().map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
}

pub fn table_types() -> &'static [&'static str] {
    &["LOCAL TEMPORARY", "TABLE", "VIEW"]
}
