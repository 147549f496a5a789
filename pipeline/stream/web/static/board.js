"use strict";
let token = sessionStorage.getItem("cdiwatch-token");
async function api(path) {
  const headers = token ? {Authorization: "Bearer " + token} : {};
  const r = await fetch(path, {headers});
  if (r.status === 401) {
    token = prompt("This monitor needs its access token:");
    if (token) sessionStorage.setItem("cdiwatch-token", token);
    return api(path);
  }
  return r.json();
}
function fill(id, rows) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  for (const r of rows) {
    const tr = document.createElement("tr"); tr.className = r.status;
    for (const v of [r.incident_id, r.category, r.district, r.channel, r.deadline]) {
      const td = document.createElement("td"); td.textContent = v; tr.append(td);
    }
    body.append(tr);
  }
}
async function refresh() {
  try {
    const audit = await api("/audit");
    fill("overdue", await api("/incidents?status=overdue&limit=100"));
    fill("at_risk", await api("/incidents?status=at_risk&limit=100"));
    for (const k of ["overdue", "at_risk", "pending"]) document.getElementById("n-" + k).textContent = audit.incidents[k];
    const rr = audit.recording_rate;
    document.getElementById("rate").textContent = rr.value == null ? "n/a" : (100 * rr.value).toFixed(1) + "%";
    document.getElementById("updated").textContent = new Date().toLocaleTimeString("en-GB");
    document.getElementById("error").textContent = "";
  } catch (e) {
    document.getElementById("error").textContent = "cannot reach the monitor: " + e;
  }
}
refresh(); setInterval(refresh, 3000);
