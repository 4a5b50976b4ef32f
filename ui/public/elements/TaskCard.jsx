// A task to label: its input fields side by side (stacked on narrow screens), long text collapsible.
// Props (injected by Chainlit): title, progress, fields [{name, text}], note, collapseAt.
import { useState } from "react";

function Field({ field, collapseAt }) {
  const text = field.text || "";
  const long = text.length > collapseAt;
  const [open, setOpen] = useState(!long);
  const shown = open ? text : text.slice(0, collapseAt).trimEnd() + " …";
  return (
    <div
      className="task-card-field"
      style={{ flex: "1 1 240px", minWidth: 0, border: "1px solid hsl(var(--border))", borderRadius: 8, padding: "8px 10px" }}
    >
      <div style={{ fontSize: 12, fontWeight: 600, opacity: 0.7, marginBottom: 4 }}>{field.name}</div>
      <div style={{ whiteSpace: "pre-wrap", wordBreak: "break-word", fontSize: 14, lineHeight: 1.45 }}>{shown}</div>
      {long && (
        <button
          type="button"
          className="task-card-toggle"
          onClick={() => setOpen(!open)}
          style={{ marginTop: 6, fontSize: 12, textDecoration: "underline", background: "none", border: 0, padding: 0, cursor: "pointer", color: "inherit" }}
        >
          {open ? "show less" : `show all (${text.length.toLocaleString()} characters)`}
        </button>
      )}
    </div>
  );
}

export default function TaskCard() {
  const fields = props.fields || [];
  return (
    <div className="task-card" style={{ width: "100%", display: "flex", flexDirection: "column", gap: 8 }}>
      <div style={{ display: "flex", justifyContent: "space-between", gap: 12, fontSize: 13 }}>
        <span style={{ fontWeight: 600 }}>{props.title}</span>
        <span className="task-card-progress" style={{ opacity: 0.8 }}>{props.progress}</span>
      </div>
      <div style={{ display: "flex", flexWrap: "wrap", gap: 8 }}>
        {fields.map((field) => (
          <Field key={field.name} field={field} collapseAt={props.collapseAt || 600} />
        ))}
      </div>
      {props.note && <div style={{ fontSize: 13, opacity: 0.85 }}>{props.note}</div>}
    </div>
  );
}
