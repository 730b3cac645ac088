-- Named queries of the embedded vector store. Every value is a bound parameter.
-- vectors_items.vector holds float32 little-endian bytes (indexed collections) or the
-- worker's ciphertext, byte for byte (sealed collections). metadata is canonical JSON.
-- vectors_versions counts the writes per (collection, tenant): a search's cached matrix
-- is valid while the version it was loaded at is current, in every process.
-- The tables are prefixed vectors_ so that the store can share a file with the queues.

-- schema --
CREATE TABLE IF NOT EXISTS vectors_collections (
    name TEXT PRIMARY KEY,
    dimension INTEGER NOT NULL,
    mode TEXT NOT NULL,
    metric TEXT NOT NULL,
    model TEXT
);
CREATE TABLE IF NOT EXISTS vectors_items (
    id INTEGER PRIMARY KEY,
    collection TEXT NOT NULL,
    tenant TEXT NOT NULL,
    message_id TEXT NOT NULL,
    vector BLOB NOT NULL,
    metadata TEXT NOT NULL,
    UNIQUE (collection, tenant, message_id)
);
CREATE TABLE IF NOT EXISTS vectors_versions (
    collection TEXT NOT NULL,
    tenant TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (collection, tenant)
);

-- collection_columns --
SELECT name FROM pragma_table_info('vectors_collections');

-- add_model_column --
-- Databases made before collections recorded their embedding model; NULL: none recorded.
ALTER TABLE vectors_collections ADD COLUMN model TEXT;

-- create_collection --
INSERT OR IGNORE INTO vectors_collections (name, dimension, mode, metric, model)
VALUES (:name, :dimension, :mode, :metric, :model);

-- adopt_model --
-- A collection with no model recorded (made before models were, or by a caller that named
-- none) takes the first model a creator with its other settings names: that is how existing
-- collections come under the one-model check.
UPDATE vectors_collections SET model = :model
WHERE name = :name AND model IS NULL AND dimension = :dimension AND mode = :mode
    AND metric = :metric;

-- get_collection --
SELECT name, dimension, mode, metric, model FROM vectors_collections WHERE name = :name;

-- upsert_item --
-- An identical item matches the WHERE of neither branch: no row changes, rowcount is 0.
INSERT INTO vectors_items (collection, tenant, message_id, vector, metadata)
VALUES (:collection, :tenant, :message_id, :vector, :metadata)
ON CONFLICT (collection, tenant, message_id) DO UPDATE
SET vector = excluded.vector, metadata = excluded.metadata
WHERE vector IS NOT excluded.vector OR metadata IS NOT excluded.metadata;

-- delete_item --
DELETE FROM vectors_items
WHERE collection = :collection AND tenant = :tenant AND message_id = :message_id;

-- bump_version --
INSERT INTO vectors_versions (collection, tenant, version) VALUES (:collection, :tenant, 1)
ON CONFLICT (collection, tenant) DO UPDATE SET version = version + 1;

-- get_version --
SELECT version FROM vectors_versions WHERE collection = :collection AND tenant = :tenant;

-- all_vectors --
SELECT message_id, vector, metadata FROM vectors_items
WHERE collection = :collection AND tenant = :tenant
ORDER BY message_id;

-- sealed_page --
SELECT message_id, vector, metadata FROM vectors_items
WHERE collection = :collection AND tenant = :tenant AND message_id > :after
ORDER BY message_id
LIMIT :limit;

-- count_items --
SELECT count(*) FROM vectors_items WHERE collection = :collection AND tenant = :tenant;
