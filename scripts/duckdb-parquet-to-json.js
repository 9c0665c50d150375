// Prints the seconds DuckDB takes to convert a folder of Parquet files to
// JSON into /dev/null: the reference for segpilot's planning of Parquet.
const { DuckDBInstance } = require('@duckdb/node-api');
(async () => {
  const dir = process.argv[2];
  const instance = await DuckDBInstance.create(':memory:');
  const con = await instance.connect();
  const start = process.hrtime.bigint();
  await con.run(`COPY (SELECT * FROM read_parquet('${dir}/*.parquet')) TO '/dev/null' (FORMAT json)`);
  console.log(Number(process.hrtime.bigint() - start) / 1e9);
})().catch((e) => { console.error(e); process.exit(1); });
