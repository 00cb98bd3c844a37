// Validates Kubernetes objects against the API's OpenAPI schemas, as the API server would: the
// schema checks of the npm package kubernetes-models (and @kubernetes-models/argo-cd for Argo CD's
// Application), plus unknown fields, which those schemas allow but `kubectl apply` refuses
// (strict field validation) and which are the usual typo.
//
// Unknown fields are found by watching the schema validator read the object: the generated code
// reads every property its schema defines (`data.spec`, `data.replicas`, ...) and enumerates the
// keys of free-form maps (labels, ConfigMap data); an own key that it neither read nor enumerated is
// not in the schema.
//
// Reads a JSON array of objects on stdin; writes a JSON array of {kind, name, errors} on stdout
// (errors empty when valid). Used by test_manifests.py; run with the machine's Node.js after
// `npm ci` in this directory.
"use strict";

const fs = require("fs");

// apiVersion + kind -> the module that holds the model class.
function modulePath(apiVersion, kind) {
  if (apiVersion === "argoproj.io/v1alpha1") {
    return `@kubernetes-models/argo-cd/argoproj.io/v1alpha1/${kind}`;
  }
  return `kubernetes-models/${apiVersion}/${kind}`;
}

// watch(value, path, records): value behind proxies that record, per object, which keys were read
// and whether its keys were enumerated.
function watch(value, path, records) {
  if (value === null || typeof value !== "object") return value;
  const rec = { path, read: new Set(), enumerated: false, keys: Object.keys(value) };
  if (!Array.isArray(value)) records.push(rec);
  const children = new Map();
  return new Proxy(value, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (typeof prop !== "string" || !Object.prototype.hasOwnProperty.call(target, prop)) {
        if (typeof prop === "string") rec.read.add(prop);
        return v;
      }
      rec.read.add(prop);
      if (!children.has(prop)) children.set(prop, watch(v, path ? `${path}.${prop}` : prop, records));
      return children.get(prop);
    },
    has(target, prop) {
      if (typeof prop === "string") rec.read.add(prop);
      return Reflect.has(target, prop);
    },
    ownKeys(target) {
      rec.enumerated = true;
      return Reflect.ownKeys(target);
    },
  });
}

function check(obj) {
  const meta = obj.metadata || {};
  const out = { kind: obj.kind, name: `${meta.namespace || ""}/${meta.name || "?"}`, errors: [] };
  let Model;
  try {
    Model = require(modulePath(obj.apiVersion, obj.kind))[obj.kind];
  } catch (e) {
    out.errors.push(`no schema for ${obj.apiVersion} ${obj.kind}`);
    return out;
  }
  if (typeof Model !== "function") {
    out.errors.push(`no schema for ${obj.apiVersion} ${obj.kind}`);
    return out;
  }
  const records = [];
  try {
    Model.prototype.validate.call(watch(obj, "", records));
  } catch (e) {
    out.errors.push(String(e.message || e));
    return out; // a failed validation stops early: unread keys would mean nothing
  }
  for (const rec of records) {
    if (rec.enumerated) continue;
    for (const key of rec.keys) {
      if (!rec.read.has(key)) out.errors.push(`unknown field ${rec.path ? `${rec.path}.` : ""}${key}`);
    }
  }
  return out;
}

const objects = JSON.parse(fs.readFileSync(0, "utf8"));
process.stdout.write(JSON.stringify(objects.map(check)) + "\n");
