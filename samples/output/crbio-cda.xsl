<?xml version="1.0" encoding="UTF-8"?>
<!--
  crbio-cda.xsl: crbio's presentation of a CDA R2 compte rendu d'examens de biologie médicale
  (CR-BIO: N3 structured body, or N1 PDF in a nonXMLBody) as one HTML page, in French.

  Deliberately boring, so that a consumer can apply it without sanitising it first:
  - XSLT 1.0 only, no extension functions: browsers (libxslt, Firefox) and any XSLT 1.0 engine;
  - no script, no event handler, no external resource (no URL in a src attribute, no url() in CSS,
    no document(), no xsl:import or xsl:include); images are data: URIs of PNG, JPEG or GIF only;
  - every document value is written as text or as an attribute value, so the serializer escapes it;
    disable-output-escaping is never used;
  - links come only from linkHtml with an http, https or mailto address; PDFs are offered as
    data: download links with a fixed media type.

  The narrative block of each section (its text) is what is shown: CDA says it is the attested
  content, the entries are for machines.
-->
<xsl:stylesheet version="1.0"
    xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
    xmlns:hl7="urn:hl7-org:v3"
    xmlns:lab="urn:oid:1.3.6.1.4.1.19376.1.3.2"
    exclude-result-prefixes="hl7 lab">

  <!-- libxslt writes <!DOCTYPE html> for this system id; it is also the HTML5 "legacy" doctype. -->
  <xsl:output method="html" encoding="UTF-8" indent="no" doctype-system="about:legacy-compat"/>

  <!-- Whitespace between table rows or list items is layout of the XML, not content. -->
  <xsl:strip-space elements="hl7:table hl7:thead hl7:tbody hl7:tfoot hl7:tr hl7:colgroup hl7:list"/>

  <xsl:variable name="stylesheet-version" select="'1.0'"/>
  <xsl:variable name="UPPER" select="'ABCDEFGHIJKLMNOPQRSTUVWXYZ'"/>
  <xsl:variable name="LOWER" select="'abcdefghijklmnopqrstuvwxyz'"/>
  <xsl:variable name="DIGITS" select="'0123456789'"/>
  <xsl:variable name="FILE-NAME-CHARS"
      select="'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_'"/>
  <!-- Base64 is split into lines in most documents; a data: URI is cleaner without them. -->
  <xsl:variable name="BLANKS" select="' &#9;&#10;&#13;'"/>

  <xsl:variable name="OID-INS-NIR" select="'1.2.250.1.213.1.4.8'"/>
  <xsl:variable name="OID-INS-NIA" select="'1.2.250.1.213.1.4.9'"/>
  <xsl:variable name="OID-INS-NIR-TEST" select="'1.2.250.1.213.1.4.10'"/>
  <xsl:variable name="OID-INS-NIR-DEMO" select="'1.2.250.1.213.1.4.11'"/>
  <xsl:variable name="TEMPLATE-PDF-COPY" select="'1.2.250.1.213.1.1.2.243'"/>

  <xsl:key name="media" match="hl7:observationMedia" use="@ID"/>
  <xsl:key name="footnote" match="hl7:footnote" use="@ID"/>

  <!-- ===================================================================================== -->
  <!-- Page                                                                                  -->
  <!-- ===================================================================================== -->

  <!-- The first ClinicalDocument anywhere, so that a CDA wrapped in another XML file (the
       ANS "auto-présentable" examples) is shown too. -->
  <xsl:variable name="cda" select="(//hl7:ClinicalDocument)[1]"/>

  <xsl:template match="/">
    <html lang="fr">
      <head>
        <meta name="viewport" content="width=device-width, initial-scale=1"/>
        <!-- Defence in depth for a saved page: nothing may be fetched, nothing may run. -->
        <meta http-equiv="Content-Security-Policy"
            content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none';
                     form-action 'none'"/>
        <meta name="referrer" content="no-referrer"/>
        <meta name="generator" content="crbio-cda.xsl {$stylesheet-version}"/>
        <title>
          <xsl:call-template name="page-title"/>
        </title>
        <style>
          <xsl:call-template name="css"/>
        </style>
      </head>
      <body>
        <xsl:choose>
          <xsl:when test="$cda">
            <xsl:apply-templates select="$cda"/>
          </xsl:when>
          <xsl:otherwise>
            <p class="notice">Ce fichier n'est pas un document CDA R2 : il ne contient pas d'élément
              ClinicalDocument (urn:hl7-org:v3).</p>
          </xsl:otherwise>
        </xsl:choose>
      </body>
    </html>
  </xsl:template>

  <!-- The page title names the patient and the date: browsers print it on every page. -->
  <xsl:template name="page-title">
    <xsl:variable name="name" select="$cda/hl7:recordTarget[1]/hl7:patientRole/hl7:patient/hl7:name[1]"/>
    <xsl:call-template name="document-title"/>
    <xsl:if test="$name">
      <xsl:text> — </xsl:text>
      <xsl:call-template name="patient-short-name">
        <xsl:with-param name="name" select="$name"/>
        <xsl:with-param name="plain" select="true()"/>
      </xsl:call-template>
    </xsl:if>
    <xsl:if test="$cda/hl7:effectiveTime/@value">
      <xsl:text> — </xsl:text>
      <xsl:call-template name="format-ts">
        <xsl:with-param name="value" select="$cda/hl7:effectiveTime/@value"/>
        <xsl:with-param name="with-time" select="false()"/>
      </xsl:call-template>
    </xsl:if>
  </xsl:template>

  <xsl:template name="document-title">
    <xsl:choose>
      <xsl:when test="normalize-space($cda/hl7:title)">
        <xsl:value-of select="normalize-space($cda/hl7:title)"/>
      </xsl:when>
      <xsl:when test="$cda/hl7:code/@displayName">
        <xsl:value-of select="$cda/hl7:code/@displayName"/>
      </xsl:when>
      <xsl:otherwise>Compte rendu d'examens de biologie médicale</xsl:otherwise>
    </xsl:choose>
  </xsl:template>

  <xsl:template match="hl7:ClinicalDocument">
    <header class="document">
      <h1><xsl:call-template name="document-title"/></h1>
      <xsl:call-template name="document-notices"/>
      <dl class="meta">
        <xsl:if test="hl7:effectiveTime">
          <dt>Date du document</dt>
          <dd><xsl:apply-templates select="hl7:effectiveTime" mode="time"/></dd>
        </xsl:if>
        <xsl:for-each select="hl7:id">
          <dt>Identifiant du document</dt>
          <dd class="id"><xsl:apply-templates select="." mode="id"/></dd>
        </xsl:for-each>
        <xsl:if test="hl7:versionNumber/@value">
          <dt>Version</dt>
          <dd><xsl:value-of select="hl7:versionNumber/@value"/></dd>
        </xsl:if>
        <xsl:for-each select="hl7:setId">
          <dt>Identifiant du lot de versions</dt>
          <dd class="id"><xsl:apply-templates select="." mode="id"/></dd>
        </xsl:for-each>
      </dl>
    </header>

    <xsl:apply-templates select="hl7:recordTarget/hl7:patientRole"/>

    <!-- Who signed, validated, prescribed and sampled comes before the results; the rest of the
         header, shown whole as the ANS asks, comes after them. -->
    <div class="cards">
      <xsl:apply-templates select="hl7:legalAuthenticator"/>
      <xsl:apply-templates select="hl7:authenticator"/>
      <xsl:apply-templates select="hl7:participant[@typeCode = 'REF' or @typeCode = 'PRF']"/>
    </div>

    <xsl:apply-templates select="hl7:component/hl7:structuredBody | hl7:component/hl7:nonXMLBody"/>

    <section class="more">
      <h2>Informations complémentaires</h2>
      <div class="cards">
        <xsl:apply-templates select="hl7:participant[not(@typeCode = 'REF' or @typeCode = 'PRF')]"/>
        <xsl:apply-templates select="hl7:informationRecipient"/>
        <xsl:call-template name="order"/>
        <xsl:call-template name="service-events"/>
        <xsl:apply-templates select="hl7:componentOf/hl7:encompassingEncounter"/>
        <xsl:apply-templates select="hl7:author"/>
        <xsl:apply-templates select="hl7:custodian"/>
        <xsl:apply-templates select="hl7:informant"/>
      </div>
    </section>

    <footer>
      <p>Présentation du document CDA par la feuille de style crbio-cda.xsl
        <xsl:value-of select="$stylesheet-version"/> (crbio).</p>
    </footer>
  </xsl:template>

  <!-- What a reader must not miss: a replaced version, a restricted document, a partial report. -->
  <xsl:template name="document-notices">
    <xsl:for-each select="hl7:relatedDocument">
      <p class="notice">
        <xsl:choose>
          <xsl:when test="@typeCode = 'RPLC'">Annule et remplace le document </xsl:when>
          <xsl:when test="@typeCode = 'APND'">Complète le document </xsl:when>
          <xsl:when test="@typeCode = 'XFRM'">Transformation du document </xsl:when>
          <xsl:otherwise>Document lié </xsl:otherwise>
        </xsl:choose>
        <xsl:for-each select="hl7:parentDocument/hl7:id">
          <xsl:if test="position() &gt; 1">, </xsl:if>
          <span class="id"><xsl:apply-templates select="." mode="id"/></span>
        </xsl:for-each>
        <xsl:if test="hl7:parentDocument/hl7:versionNumber/@value">
          <xsl:text> (version </xsl:text>
          <xsl:value-of select="hl7:parentDocument/hl7:versionNumber/@value"/>
          <xsl:text>)</xsl:text>
        </xsl:if>
      </p>
    </xsl:for-each>
    <xsl:for-each select="hl7:confidentialityCode[(@code and @code != 'N') or @nullFlavor]">
      <p class="notice">
        <xsl:text>Confidentialité : </xsl:text>
        <xsl:choose>
          <xsl:when test="@code = 'R'">restreinte</xsl:when>
          <xsl:when test="@code = 'V'">très restreinte</xsl:when>
          <xsl:otherwise><xsl:apply-templates select="." mode="code"/></xsl:otherwise>
        </xsl:choose>
      </p>
    </xsl:for-each>
    <xsl:if test="hl7:documentationOf/hl7:serviceEvent/lab:statusCode[@code = 'active']">
      <p class="notice">Compte rendu partiel : des examens sont en cours, les résultats ne sont pas
        tous rendus.</p>
    </xsl:if>
  </xsl:template>

  <!-- ===================================================================================== -->
  <!-- Patient                                                                               -->
  <!-- ===================================================================================== -->

  <xsl:template match="hl7:patientRole">
    <xsl:variable name="patient" select="hl7:patient"/>
    <section class="card patient">
      <h2>Patient</h2>
      <xsl:if test="$patient/hl7:name">
        <p class="banner">
          <xsl:call-template name="patient-short-name">
            <xsl:with-param name="name" select="$patient/hl7:name[1]"/>
          </xsl:call-template>
          <xsl:if test="$patient/hl7:birthTime/@value">
            <xsl:choose>
              <xsl:when test="string-length(normalize-space($patient/hl7:birthTime/@value)) &gt;= 8">
                <xsl:text> — né(e) le </xsl:text>
              </xsl:when>
              <xsl:otherwise> — né(e) en </xsl:otherwise>
            </xsl:choose>
            <xsl:call-template name="format-ts">
              <xsl:with-param name="value" select="$patient/hl7:birthTime/@value"/>
              <xsl:with-param name="with-time" select="false()"/>
            </xsl:call-template>
          </xsl:if>
        </p>
      </xsl:if>
      <xsl:for-each select="hl7:id[@root = $OID-INS-NIR or @root = $OID-INS-NIA
                                   or @root = $OID-INS-NIR-TEST or @root = $OID-INS-NIR-DEMO]">
        <p class="ins"><xsl:apply-templates select="." mode="ins"/></p>
      </xsl:for-each>
      <dl>
        <xsl:for-each select="$patient/hl7:name">
          <xsl:call-template name="patient-name-rows"/>
        </xsl:for-each>
        <xsl:for-each select="$patient/hl7:administrativeGenderCode">
          <dt>Sexe</dt>
          <dd><xsl:apply-templates select="." mode="sex"/></dd>
        </xsl:for-each>
        <xsl:for-each select="$patient/hl7:birthTime">
          <dt>Date de naissance</dt>
          <dd><xsl:apply-templates select="." mode="time"/></dd>
        </xsl:for-each>
        <xsl:for-each select="$patient/hl7:birthplace/hl7:place/hl7:addr">
          <dt>Lieu de naissance</dt>
          <dd><xsl:apply-templates select="." mode="birthplace"/></dd>
        </xsl:for-each>
        <xsl:for-each select="hl7:id[not(@root = $OID-INS-NIR or @root = $OID-INS-NIA
                                         or @root = $OID-INS-NIR-TEST or @root = $OID-INS-NIR-DEMO)]">
          <dt>Identifiant</dt>
          <dd class="id"><xsl:apply-templates select="." mode="id"/></dd>
        </xsl:for-each>
        <xsl:call-template name="contact-rows"/>
        <xsl:for-each select="$patient/hl7:guardian">
          <dt>Représentant légal</dt>
          <dd><xsl:apply-templates select="." mode="guardian"/></dd>
        </xsl:for-each>
      </dl>
    </section>
  </xsl:template>

  <!-- "FAMILY First" from the birth name, else the used name, else whatever the name holds;
       plain text only with $plain (for the page title). -->
  <xsl:template name="patient-short-name">
    <xsl:param name="name"/>
    <xsl:param name="plain" select="false()"/>
    <xsl:variable name="family">
      <xsl:call-template name="preferred-part">
        <xsl:with-param name="parts" select="$name/hl7:family"/>
      </xsl:call-template>
    </xsl:variable>
    <xsl:variable name="given">
      <xsl:call-template name="preferred-part">
        <xsl:with-param name="parts" select="$name/hl7:given"/>
      </xsl:call-template>
    </xsl:variable>
    <xsl:choose>
      <xsl:when test="($family != '' or $given != '') and $plain">
        <xsl:value-of select="normalize-space(concat($family, ' ', $given))"/>
      </xsl:when>
      <xsl:when test="$family != '' or $given != ''">
        <strong class="family"><xsl:value-of select="$family"/></strong>
        <xsl:if test="$family != '' and $given != ''">
          <xsl:text> </xsl:text>
        </xsl:if>
        <xsl:value-of select="$given"/>
      </xsl:when>
      <xsl:when test="$plain">
        <xsl:value-of select="normalize-space($name)"/>
      </xsl:when>
      <xsl:otherwise>
        <xsl:apply-templates select="$name" mode="name"/>
      </xsl:otherwise>
    </xsl:choose>
  </xsl:template>

  <!-- The birth (BR) part, else the used (CL) one, else the first without qualifier. -->
  <xsl:template name="preferred-part">
    <xsl:param name="parts"/>
    <xsl:choose>
      <xsl:when test="$parts[@qualifier = 'BR']">
        <xsl:value-of select="normalize-space($parts[@qualifier = 'BR'])"/>
      </xsl:when>
      <xsl:when test="$parts[@qualifier = 'CL']">
        <xsl:value-of select="normalize-space($parts[@qualifier = 'CL'])"/>
      </xsl:when>
      <xsl:otherwise><xsl:value-of select="normalize-space($parts[not(@qualifier)])"/></xsl:otherwise>
    </xsl:choose>
  </xsl:template>

  <!-- The INS traits: birth family name (BR), first birth given name (BR), the list of birth
       given names (given without qualifier), then the used names (CL). A name without any
       qualifier is an ordinary, non-INS name: its parts are shown as the used name. -->
  <xsl:template name="patient-name-rows">
    <xsl:variable name="qualified" select="hl7:*[@qualifier]"/>
    <xsl:variable name="used-family" select="hl7:family[@qualifier = 'CL']"/>
    <xsl:if test="@nullFlavor">
      <dt>Nom</dt>
      <dd><xsl:apply-templates select="." mode="null"/></dd>
    </xsl:if>
    <xsl:call-template name="name-row">
      <xsl:with-param name="label" select="'Nom de naissance'"/>
      <xsl:with-param name="nodes" select="hl7:family[@qualifier = 'BR']"/>
    </xsl:call-template>
    <xsl:call-template name="name-row">
      <xsl:with-param name="label" select="'Premier prénom de naissance'"/>
      <xsl:with-param name="nodes" select="hl7:given[@qualifier = 'BR'][1]"/>
    </xsl:call-template>
    <xsl:call-template name="name-row">
      <xsl:with-param name="label" select="'Prénoms de naissance'"/>
      <xsl:with-param name="nodes" select="hl7:given[not(@qualifier)][$qualified]"/>
    </xsl:call-template>
    <xsl:call-template name="name-row">
      <xsl:with-param name="label" select="'Nom utilisé'"/>
      <xsl:with-param name="nodes" select="$used-family | hl7:family[not(@qualifier)][not($used-family)]"/>
    </xsl:call-template>
    <xsl:call-template name="name-row">
      <xsl:with-param name="label" select="'Prénom utilisé'"/>
      <xsl:with-param name="nodes" select="hl7:given[@qualifier = 'CL'] | hl7:given[not($qualified)]"/>
    </xsl:call-template>
    <xsl:call-template name="name-row">
      <xsl:with-param name="label" select="&quot;Nom d'usage&quot;"/>
      <xsl:with-param name="nodes" select="hl7:family[@qualifier = 'SP']"/>
    </xsl:call-template>
    <xsl:if test="not(hl7:*) and normalize-space(.)">
      <dt>Nom</dt>
      <dd><xsl:value-of select="normalize-space(.)"/></dd>
    </xsl:if>
  </xsl:template>

  <xsl:template name="name-row">
    <xsl:param name="label"/>
    <xsl:param name="nodes"/>
    <xsl:if test="$nodes[normalize-space()]">
      <dt><xsl:value-of select="$label"/></dt>
      <dd>
        <xsl:call-template name="parts"><xsl:with-param name="nodes" select="$nodes"/></xsl:call-template>
      </dd>
    </xsl:if>
  </xsl:template>

  <xsl:template match="hl7:administrativeGenderCode" mode="sex">
    <xsl:choose>
      <xsl:when test="@code = 'M'">Masculin</xsl:when>
      <xsl:when test="@code = 'F'">Féminin</xsl:when>
      <xsl:when test="@code = 'UN'">Indéterminé</xsl:when>
      <xsl:when test="@nullFlavor"><xsl:apply-templates select="." mode="null"/></xsl:when>
      <xsl:otherwise><xsl:apply-templates select="." mode="code"/></xsl:otherwise>
    </xsl:choose>
  </xsl:template>

  <!-- The birthplace is a commune (county holds its INSEE code) or a country (99xxx). -->
  <xsl:template match="hl7:addr" mode="birthplace">
    <xsl:choose>
      <xsl:when test="@nullFlavor"><xsl:apply-templates select="." mode="null"/></xsl:when>
      <xsl:otherwise>
        <xsl:variable name="place">
          <xsl:call-template name="parts">
            <xsl:with-param name="nodes" select="hl7:city | hl7:country | hl7:state"/>
            <xsl:with-param name="separator" select="', '"/>
          </xsl:call-template>
        </xsl:variable>
        <xsl:value-of select="$place"/>
        <xsl:if test="normalize-space(hl7:county)">
          <xsl:if test="normalize-space($place)"><xsl:text> </xsl:text></xsl:if>
          <xsl:text>(code lieu de naissance </xsl:text>
          <xsl:value-of select="normalize-space(hl7:county)"/>
          <xsl:text>)</xsl:text>
        </xsl:if>
        <xsl:if test="not(hl7:*)"><xsl:value-of select="normalize-space(.)"/></xsl:if>
      </xsl:otherwise>
    </xsl:choose>
  </xsl:template>

  <xsl:template match="hl7:id" mode="ins">
    <xsl:text>Matricule INS : </xsl:text>
    <xsl:value-of select="@extension"/>
    <xsl:text> </xsl:text>
    <xsl:choose>
      <xsl:when test="@root = $OID-INS-NIR">[INS-NIR]</xsl:when>
      <xsl:when test="@root = $OID-INS-NIA">[INS-NIA]</xsl:when>
      <xsl:when test="@root = $OID-INS-NIR-TEST">[INS-NIR de test]</xsl:when>
      <xsl:when test="@root = $OID-INS-NIR-DEMO">[INS-NIR de démonstration]</xsl:when>
    </xsl:choose>
  </xsl:template>

  <xsl:template match="hl7:guardian" mode="guardian">
    <xsl:apply-templates select="hl7:guardianPerson/hl7:name" mode="name"/>
    <xsl:for-each select="hl7:guardianOrganization/hl7:name">
      <xsl:value-of select="normalize-space(.)"/>
    </xsl:for-each>
    <xsl:if test="hl7:code">
      <xsl:text> (</xsl:text>
      <xsl:apply-templates select="hl7:code" mode="code"/>
      <xsl:text>)</xsl:text>
    </xsl:if>
    <xsl:for-each select="hl7:addr[not(@nullFlavor)] | hl7:telecom[not(@nullFlavor)]">
      <br/>
      <xsl:apply-templates select="."/>
    </xsl:for-each>
  </xsl:template>

  <!-- ===================================================================================== -->
  <!-- People and organisations of the header                                                -->
  <!-- ===================================================================================== -->

  <xsl:template match="hl7:legalAuthenticator">
    <section class="card">
      <h2>Responsable du document</h2>
      <dl>
        <xsl:apply-templates select="hl7:assignedEntity" mode="role"/>
        <xsl:call-template name="time-row">
          <xsl:with-param name="label" select="'Date de signature'"/>
        </xsl:call-template>
      </dl>
    </section>
  </xsl:template>

  <xsl:template match="hl7:authenticator">
    <section class="card">
      <h2>Biologiste ayant validé</h2>
      <dl>
        <xsl:apply-templates select="hl7:assignedEntity" mode="role"/>
        <xsl:call-template name="time-row">
          <xsl:with-param name="label" select="'Date de validation'"/>
        </xsl:call-template>
      </dl>
    </section>
  </xsl:template>

  <xsl:template match="hl7:author">
    <section class="card">
      <h2>Auteur du document</h2>
      <dl>
        <xsl:apply-templates select="hl7:assignedAuthor" mode="role"/>
        <xsl:call-template name="time-row">
          <xsl:with-param name="label" select="'Date'"/>
        </xsl:call-template>
      </dl>
    </section>
  </xsl:template>

  <xsl:template match="hl7:participant">
    <section class="card">
      <h2><xsl:apply-templates select="." mode="participation"/></h2>
      <dl>
        <xsl:apply-templates select="hl7:associatedEntity" mode="role"/>
        <xsl:call-template name="time-row">
          <xsl:with-param name="label">
            <xsl:choose>
              <xsl:when test="@typeCode = 'REF'">Date de prescription</xsl:when>
              <xsl:when test="hl7:functionCode/@code = 'PRELV'">Date du prélèvement</xsl:when>
              <xsl:otherwise>Date</xsl:otherwise>
            </xsl:choose>
          </xsl:with-param>
        </xsl:call-template>
      </dl>
    </section>
  </xsl:template>

  <xsl:template match="hl7:participant" mode="participation">
    <xsl:choose>
      <xsl:when test="hl7:functionCode/@displayName">
        <xsl:value-of select="hl7:functionCode/@displayName"/>
      </xsl:when>
      <xsl:when test="hl7:functionCode/@code = 'PRELV'">Préleveur</xsl:when>
      <xsl:when test="hl7:functionCode/@code = 'PCP'">Médecin traitant</xsl:when>
      <xsl:when test="@typeCode = 'REF'">Prescripteur</xsl:when>
      <xsl:when test="@typeCode = 'PRF'">Exécutant</xsl:when>
      <xsl:when test="@typeCode = 'INF'">Informateur</xsl:when>
      <xsl:when test="@typeCode = 'ATND'">Médecin responsable</xsl:when>
      <xsl:when test="@typeCode = 'ADM'">Admission</xsl:when>
      <xsl:when test="@typeCode = 'CON'">Consultant</xsl:when>
      <xsl:when test="@typeCode = 'DIS'">Sortie</xsl:when>
      <xsl:when test="@typeCode = 'ESC'">Accompagnant</xsl:when>
      <xsl:when test="@typeCode = 'CALLBCK'">Contact pour rappel</xsl:when>
      <xsl:when test="@typeCode = 'AUTHEN'">Validation</xsl:when>
      <xsl:otherwise>
        <xsl:text>Participant</xsl:text>
        <xsl:if test="@typeCode">
          <xsl:text> (</xsl:text>
          <xsl:value-of select="@typeCode"/>
          <xsl:text>)</xsl:text>
        </xsl:if>
      </xsl:otherwise>
    </xsl:choose>
  </xsl:template>

  <xsl:template match="hl7:informationRecipient">
    <section class="card">
      <h2>
        <xsl:choose>
          <xsl:when test="@typeCode = 'TRC'">Destinataire en copie</xsl:when>
          <xsl:otherwise>Destinataire</xsl:otherwise>
        </xsl:choose>
      </h2>
      <dl>
        <xsl:apply-templates select="hl7:intendedRecipient" mode="role"/>
      </dl>
    </section>
  </xsl:template>

  <xsl:template match="hl7:informant">
    <section class="card">
      <h2>
        <xsl:choose>
          <xsl:when test="hl7:relatedEntity/@classCode = 'ECON'">Personne à prévenir</xsl:when>
          <xsl:when test="hl7:relatedEntity/@classCode = 'NOK'">Personne de confiance</xsl:when>
          <xsl:when test="hl7:relatedEntity/@classCode = 'GUARD'">Tuteur</xsl:when>
          <xsl:when test="hl7:relatedEntity/@classCode = 'CAREGIVER'">Aidant</xsl:when>
          <xsl:otherwise>Informateur</xsl:otherwise>
        </xsl:choose>
      </h2>
      <dl>
        <xsl:apply-templates select="hl7:relatedEntity | hl7:assignedEntity" mode="role"/>
      </dl>
    </section>
  </xsl:template>

  <xsl:template match="hl7:custodian">
    <section class="card">
      <h2>Conservation du document</h2>
      <dl>
        <xsl:for-each select="hl7:assignedCustodian/hl7:representedCustodianOrganization">
          <dt>Organisation</dt>
          <dd><xsl:apply-templates select="." mode="organization"/></dd>
        </xsl:for-each>
      </dl>
    </section>
  </xsl:template>

  <xsl:template name="order">
    <xsl:if test="hl7:inFulfillmentOf/hl7:order">
      <section class="card">
        <h2>Demande d'examens</h2>
        <dl>
          <xsl:for-each select="hl7:inFulfillmentOf/hl7:order">
            <xsl:for-each select="hl7:id">
              <dt>Identifiant de la demande</dt>
              <dd class="id"><xsl:apply-templates select="." mode="id"/></dd>
            </xsl:for-each>
            <xsl:for-each select="hl7:code">
              <dt>Type</dt>
              <dd><xsl:apply-templates select="." mode="code"/></dd>
            </xsl:for-each>
          </xsl:for-each>
        </dl>
      </section>
    </xsl:if>
  </xsl:template>

  <!-- The service events are the report's chapters; their performers, the executing laboratories. -->
  <xsl:template name="service-events">
    <xsl:variable name="events" select="hl7:documentationOf/hl7:serviceEvent"/>
    <xsl:if test="$events">
      <section class="card">
        <h2>Examens</h2>
        <dl>
          <xsl:if test="$events/hl7:code">
            <dt>Chapitres</dt>
            <dd>
              <xsl:for-each select="$events/hl7:code">
                <xsl:if test="position() &gt; 1">, </xsl:if>
                <xsl:apply-templates select="." mode="code"/>
              </xsl:for-each>
            </dd>
          </xsl:if>
          <xsl:for-each select="$events/lab:statusCode[@code]">
            <dt>Statut</dt>
            <dd>
              <xsl:choose>
                <xsl:when test="@code = 'completed'">terminé</xsl:when>
                <xsl:when test="@code = 'active'">en cours (compte rendu partiel)</xsl:when>
                <xsl:otherwise><xsl:value-of select="@code"/></xsl:otherwise>
              </xsl:choose>
            </dd>
          </xsl:for-each>
          <xsl:for-each select="$events/hl7:id">
            <dt>Identifiant</dt>
            <dd class="id"><xsl:apply-templates select="." mode="id"/></dd>
          </xsl:for-each>
          <xsl:for-each select="$events/hl7:effectiveTime[not(@nullFlavor)]">
            <dt>Période</dt>
            <dd><xsl:apply-templates select="." mode="time"/></dd>
          </xsl:for-each>
          <xsl:for-each select="$events/hl7:performer">
            <dt>Laboratoire exécutant</dt>
            <dd>
              <xsl:for-each select="hl7:assignedEntity">
                <xsl:apply-templates select="hl7:representedOrganization" mode="organization"/>
                <xsl:if test="hl7:assignedPerson/hl7:name">
                  <xsl:if test="hl7:representedOrganization"><br/></xsl:if>
                  <xsl:apply-templates select="hl7:assignedPerson/hl7:name" mode="name"/>
                  <xsl:if test="hl7:code">
                    <xsl:text> (</xsl:text>
                    <xsl:apply-templates select="hl7:code" mode="code"/>
                    <xsl:text>)</xsl:text>
                  </xsl:if>
                </xsl:if>
              </xsl:for-each>
              <xsl:if test="hl7:time[not(@nullFlavor)]">
                <br/>
                <xsl:apply-templates select="hl7:time" mode="time"/>
              </xsl:if>
            </dd>
          </xsl:for-each>
        </dl>
      </section>
    </xsl:if>
  </xsl:template>

  <xsl:template match="hl7:encompassingEncounter">
    <section class="card">
      <h2>Prise en charge</h2>
      <dl>
        <xsl:for-each select="hl7:code">
          <dt>Type</dt>
          <dd><xsl:apply-templates select="." mode="code"/></dd>
        </xsl:for-each>
        <xsl:for-each select="hl7:id">
          <dt>Identifiant</dt>
          <dd class="id"><xsl:apply-templates select="." mode="id"/></dd>
        </xsl:for-each>
        <xsl:for-each select="hl7:effectiveTime[not(@nullFlavor)]">
          <dt>Date</dt>
          <dd><xsl:apply-templates select="." mode="time"/></dd>
        </xsl:for-each>
        <xsl:for-each select="hl7:responsibleParty/hl7:assignedEntity">
          <dt>Responsable</dt>
          <dd>
            <xsl:apply-templates select="hl7:assignedPerson/hl7:name" mode="name"/>
            <xsl:if test="hl7:code">
              <xsl:text> (</xsl:text>
              <xsl:apply-templates select="hl7:code" mode="code"/>
              <xsl:text>)</xsl:text>
            </xsl:if>
            <xsl:if test="hl7:representedOrganization">
              <xsl:if test="hl7:assignedPerson/hl7:name"><br/></xsl:if>
              <xsl:apply-templates select="hl7:representedOrganization" mode="organization"/>
            </xsl:if>
          </dd>
        </xsl:for-each>
        <xsl:for-each select="hl7:location/hl7:healthCareFacility">
          <dt>Lieu</dt>
          <dd>
            <xsl:apply-templates select="hl7:code" mode="code"/>
            <xsl:for-each select="hl7:location">
              <xsl:if test="../hl7:code"><br/></xsl:if>
              <xsl:if test="normalize-space(hl7:name)">
                <strong><xsl:value-of select="normalize-space(hl7:name)"/></strong>
                <br/>
              </xsl:if>
              <xsl:apply-templates select="hl7:addr"/>
            </xsl:for-each>
            <xsl:for-each select="hl7:serviceProviderOrganization">
              <br/>
              <xsl:apply-templates select="." mode="organization"/>
            </xsl:for-each>
          </dd>
        </xsl:for-each>
      </dl>
    </section>
  </xsl:template>

  <!-- Rows for any role: the person (or device) playing it, its ids, profession, contacts and the
       organisation it acts for. A person's address or telecom equal to the organisation's is
       shown once, with the organisation. -->
  <xsl:template match="*" mode="role">
    <xsl:variable name="organization" select="hl7:representedOrganization | hl7:scopingOrganization
                                              | hl7:receivedOrganization"/>
    <xsl:variable name="person" select="hl7:assignedPerson | hl7:associatedPerson | hl7:informationRecipient
                                        | hl7:relatedPerson | hl7:playingEntity"/>
    <xsl:for-each select="$person/hl7:name">
      <dt>Nom</dt>
      <dd class="person"><xsl:apply-templates select="." mode="name"/></dd>
    </xsl:for-each>
    <xsl:for-each select="hl7:assignedAuthoringDevice">
      <dt>Logiciel</dt>
      <dd>
        <xsl:call-template name="parts">
          <xsl:with-param name="nodes" select="hl7:softwareName | hl7:manufacturerModelName"/>
          <xsl:with-param name="separator" select="', '"/>
        </xsl:call-template>
      </dd>
    </xsl:for-each>
    <xsl:for-each select="hl7:id[not(@nullFlavor)]">
      <dt>Identifiant</dt>
      <dd class="id"><xsl:apply-templates select="." mode="id"/></dd>
    </xsl:for-each>
    <xsl:for-each select="hl7:code">
      <dt>
        <xsl:choose>
          <xsl:when test="self::hl7:code[parent::hl7:relatedEntity]">Lien</xsl:when>
          <xsl:otherwise>Profession, spécialité</xsl:otherwise>
        </xsl:choose>
      </dt>
      <dd><xsl:apply-templates select="." mode="code"/></dd>
    </xsl:for-each>
    <xsl:for-each select="hl7:addr[not(@nullFlavor)]">
      <xsl:if test="not($organization)
                    or normalize-space(.) != normalize-space($organization[1]/hl7:addr[1])">
        <dt>Adresse</dt>
        <dd><xsl:apply-templates select="."/></dd>
      </xsl:if>
    </xsl:for-each>
    <xsl:for-each select="hl7:telecom[not(@nullFlavor)]">
      <xsl:if test="not($organization) or not($organization[1]/hl7:telecom[@value = current()/@value])">
        <dt>Télécom</dt>
        <dd><xsl:apply-templates select="."/></dd>
      </xsl:if>
    </xsl:for-each>
    <xsl:for-each select="$organization">
      <dt>Organisation</dt>
      <dd><xsl:apply-templates select="." mode="organization"/></dd>
    </xsl:for-each>
  </xsl:template>

  <!-- The laboratory is named in most cards: its address and telecoms are shown once, in the
       custodian's card, and elsewhere only for another organisation. -->
  <xsl:variable name="custodian-ids"
      select="$cda/hl7:custodian/hl7:assignedCustodian/hl7:representedCustodianOrganization
              /hl7:id[@extension]"/>

  <xsl:template match="*" mode="organization">
    <xsl:variable name="custodian" select="not(self::hl7:representedCustodianOrganization)
        and hl7:id[@root = $custodian-ids/@root and @extension = $custodian-ids/@extension]"/>
    <xsl:for-each select="hl7:name">
      <strong class="organization"><xsl:value-of select="normalize-space(.)"/></strong>
      <xsl:if test="position() != last()">, </xsl:if>
    </xsl:for-each>
    <xsl:for-each select="hl7:id[not(@nullFlavor)] | hl7:addr[not(@nullFlavor)][not($custodian)]
                          | hl7:telecom[not(@nullFlavor)][not($custodian)] | hl7:standardIndustryClassCode">
      <xsl:if test="position() &gt; 1 or ../hl7:name"><br/></xsl:if>
      <xsl:choose>
        <xsl:when test="self::hl7:id">
          <span class="id"><xsl:apply-templates select="." mode="id"/></span>
        </xsl:when>
        <xsl:when test="self::hl7:standardIndustryClassCode">
          <xsl:text>Cadre d'exercice : </xsl:text>
          <xsl:apply-templates select="." mode="code"/>
        </xsl:when>
        <xsl:otherwise>
          <xsl:apply-templates select="."/>
        </xsl:otherwise>
      </xsl:choose>
    </xsl:for-each>
  </xsl:template>

  <xsl:template name="time-row">
    <xsl:param name="label"/>
    <xsl:for-each select="hl7:time[not(@nullFlavor = 'NA')]">
      <dt><xsl:value-of select="$label"/></dt>
      <dd><xsl:apply-templates select="." mode="time"/></dd>
    </xsl:for-each>
  </xsl:template>

  <!-- ===================================================================================== -->
  <!-- HL7 data types                                                                        -->
  <!-- ===================================================================================== -->

  <!-- II: "extension [root]", or the root alone. -->
  <xsl:template match="*" mode="id">
    <xsl:choose>
      <xsl:when test="@nullFlavor and not(@root)"><xsl:apply-templates select="." mode="null"/></xsl:when>
      <xsl:when test="@extension">
        <xsl:value-of select="@extension"/>
        <xsl:if test="@root">
          <xsl:text> [</xsl:text>
          <xsl:value-of select="@root"/>
          <xsl:text>]</xsl:text>
        </xsl:if>
      </xsl:when>
      <xsl:otherwise><xsl:value-of select="@root"/></xsl:otherwise>
    </xsl:choose>
    <xsl:if test="@assigningAuthorityName">
      <xsl:text> (</xsl:text>
      <xsl:value-of select="@assigningAuthorityName"/>
      <xsl:text>)</xsl:text>
    </xsl:if>
  </xsl:template>

  <!-- CD/CE/CV: the label, else the original text, else the code. -->
  <xsl:template match="*" mode="code">
    <xsl:choose>
      <xsl:when test="normalize-space(@displayName)"><xsl:value-of select="@displayName"/></xsl:when>
      <xsl:when test="normalize-space(hl7:originalText)">
        <xsl:value-of select="normalize-space(hl7:originalText)"/>
      </xsl:when>
      <xsl:when test="@code"><xsl:value-of select="@code"/></xsl:when>
      <xsl:when test="@nullFlavor"><xsl:apply-templates select="." mode="null"/></xsl:when>
    </xsl:choose>
  </xsl:template>

  <!-- PN/ON: title (suffix, e.g. DR) or civility (prefix), given names, family names. -->
  <xsl:template match="hl7:name" mode="name">
    <xsl:choose>
      <xsl:when test="@nullFlavor"><xsl:apply-templates select="." mode="null"/></xsl:when>
      <xsl:when test="hl7:*">
        <xsl:variable name="title">
          <xsl:choose>
            <xsl:when test="hl7:suffix">
              <xsl:call-template name="parts">
                <xsl:with-param name="nodes" select="hl7:suffix"/>
              </xsl:call-template>
            </xsl:when>
            <xsl:otherwise>
              <xsl:call-template name="parts">
                <xsl:with-param name="nodes" select="hl7:prefix"/>
              </xsl:call-template>
            </xsl:otherwise>
          </xsl:choose>
        </xsl:variable>
        <xsl:call-template name="parts">
          <xsl:with-param name="nodes" select="hl7:given"/>
          <xsl:with-param name="before" select="normalize-space($title)"/>
        </xsl:call-template>
        <xsl:if test="hl7:family">
          <xsl:if test="normalize-space($title) or hl7:given"><xsl:text> </xsl:text></xsl:if>
          <strong class="family">
            <xsl:call-template name="parts">
              <xsl:with-param name="nodes" select="hl7:family"/>
            </xsl:call-template>
          </strong>
        </xsl:if>
      </xsl:when>
      <xsl:otherwise><xsl:value-of select="normalize-space(.)"/></xsl:otherwise>
    </xsl:choose>
  </xsl:template>

  <!-- The normalised texts of some nodes, with a separator; an optional text goes first. -->
  <xsl:template name="parts">
    <xsl:param name="nodes"/>
    <xsl:param name="separator" select="' '"/>
    <xsl:param name="before" select="''"/>
    <xsl:value-of select="$before"/>
    <xsl:for-each select="$nodes[normalize-space()]">
      <xsl:if test="position() &gt; 1 or $before != ''"><xsl:value-of select="$separator"/></xsl:if>
      <xsl:value-of select="normalize-space(.)"/>
    </xsl:for-each>
  </xsl:template>

  <!-- AD: its parts in document order; "8 rue X" and "75007 PARIS" stay together. -->
  <xsl:template match="hl7:addr">
    <xsl:choose>
      <xsl:when test="@nullFlavor"><xsl:apply-templates select="." mode="null"/></xsl:when>
      <xsl:when test="hl7:*">
        <xsl:for-each select="hl7:*[normalize-space()][not(self::hl7:delimiter or self::hl7:useablePeriod)]">
          <xsl:if test="position() &gt; 1">
            <xsl:choose>
              <xsl:when test="(self::hl7:streetName or self::hl7:streetNameType or self::hl7:streetNameBase)
                              and preceding-sibling::hl7:*[1][self::hl7:houseNumber
                                                              or self::hl7:houseNumberNumeric
                                                              or self::hl7:streetNameType]">
                <xsl:text> </xsl:text>
              </xsl:when>
              <xsl:when test="self::hl7:city and preceding-sibling::hl7:*[1][self::hl7:postalCode]">
                <xsl:text> </xsl:text>
              </xsl:when>
              <xsl:when test="self::hl7:postalCode and preceding-sibling::hl7:*[1][self::hl7:city]">
                <xsl:text> </xsl:text>
              </xsl:when>
              <xsl:otherwise>, </xsl:otherwise>
            </xsl:choose>
          </xsl:if>
          <xsl:if test="self::hl7:postBox">BP </xsl:if>
          <xsl:value-of select="normalize-space(.)"/>
        </xsl:for-each>
      </xsl:when>
      <xsl:otherwise><xsl:value-of select="normalize-space(.)"/></xsl:otherwise>
    </xsl:choose>
    <xsl:call-template name="use"/>
  </xsl:template>

  <!-- TEL: the number or the address without its scheme; nothing here is a link. -->
  <xsl:template match="hl7:telecom">
    <xsl:variable name="value" select="normalize-space(@value)"/>
    <xsl:variable name="scheme" select="translate(substring-before($value, ':'), $UPPER, $LOWER)"/>
    <xsl:choose>
      <xsl:when test="@nullFlavor"><xsl:apply-templates select="." mode="null"/></xsl:when>
      <xsl:when test="$scheme = 'tel'">
        <xsl:text>Tél. </xsl:text>
        <xsl:value-of select="substring-after($value, ':')"/>
      </xsl:when>
      <xsl:when test="$scheme = 'fax'">
        <xsl:text>Fax </xsl:text>
        <xsl:value-of select="substring-after($value, ':')"/>
      </xsl:when>
      <xsl:when test="$scheme = 'mailto'">
        <xsl:text>Courriel </xsl:text>
        <xsl:value-of select="substring-after($value, ':')"/>
      </xsl:when>
      <xsl:otherwise><xsl:value-of select="$value"/></xsl:otherwise>
    </xsl:choose>
    <xsl:call-template name="use"/>
  </xsl:template>

  <xsl:template name="use">
    <xsl:variable name="use" select="concat(' ', normalize-space(@use), ' ')"/>
    <xsl:variable name="label">
      <xsl:choose>
        <xsl:when test="contains($use, ' MC ')">mobile</xsl:when>
        <xsl:when test="contains($use, ' EC ')">urgence</xsl:when>
        <xsl:when test="contains($use, ' HP ')">domicile principal</xsl:when>
        <xsl:when test="contains($use, ' HV ')">lieu de vacances</xsl:when>
        <xsl:when test="contains($use, ' H ')">domicile</xsl:when>
        <xsl:when test="contains($use, ' WP ')">professionnel</xsl:when>
        <xsl:when test="contains($use, ' DIR ')">ligne directe</xsl:when>
        <xsl:when test="contains($use, ' PUB ')">standard</xsl:when>
        <xsl:when test="contains($use, ' TMP ')">temporaire</xsl:when>
        <xsl:when test="contains($use, ' PST ')">postale</xsl:when>
        <xsl:when test="contains($use, ' PG ')">bipeur</xsl:when>
      </xsl:choose>
    </xsl:variable>
    <xsl:if test="$label != ''">
      <xsl:text> (</xsl:text>
      <xsl:value-of select="$label"/>
      <xsl:text>)</xsl:text>
    </xsl:if>
  </xsl:template>

  <!-- TS, IVL_TS: "04/01/2024 à 16:05", "du … au …"; one bound alone is shown as a date. -->
  <xsl:template match="*" mode="time">
    <xsl:choose>
      <xsl:when test="@value">
        <xsl:apply-templates select="@value" mode="ts"/>
      </xsl:when>
      <xsl:when test="hl7:low/@value and hl7:high/@value">
        <xsl:text>du </xsl:text>
        <xsl:apply-templates select="hl7:low/@value" mode="ts"/>
        <xsl:text> au </xsl:text>
        <xsl:apply-templates select="hl7:high/@value" mode="ts"/>
      </xsl:when>
      <xsl:when test="hl7:low/@value">
        <xsl:apply-templates select="hl7:low/@value" mode="ts"/>
      </xsl:when>
      <xsl:when test="hl7:high/@value">
        <xsl:apply-templates select="hl7:high/@value" mode="ts"/>
      </xsl:when>
      <xsl:when test="hl7:center/@value">
        <xsl:apply-templates select="hl7:center/@value" mode="ts"/>
      </xsl:when>
      <xsl:when test="@nullFlavor"><xsl:apply-templates select="." mode="null"/></xsl:when>
      <xsl:otherwise>
        <xsl:apply-templates select="(hl7:low | hl7:high)[@nullFlavor][1]" mode="null"/>
      </xsl:otherwise>
    </xsl:choose>
  </xsl:template>

  <xsl:template match="@*" mode="ts">
    <xsl:call-template name="format-ts"><xsl:with-param name="value" select="."/></xsl:call-template>
  </xsl:template>

  <!-- HL7 TS (AAAAMMJJhhmmss.ffff±zzzz) as JJ/MM/AAAA, with " à hh:mm" when the time is known.
       A time zone other than metropolitan France's is written out; a malformed value is shown
       as it is. -->
  <xsl:template name="format-ts">
    <xsl:param name="value"/>
    <xsl:param name="with-time" select="true()"/>
    <xsl:variable name="v" select="normalize-space($value)"/>
    <xsl:variable name="date" select="substring($v, 1, 8)"/>
    <xsl:choose>
      <xsl:when test="string-length($v) &gt;= 8 and translate($date, $DIGITS, '') = ''">
        <xsl:value-of select="concat(substring($date, 7, 2), '/', substring($date, 5, 2), '/',
                                     substring($date, 1, 4))"/>
        <xsl:if test="$with-time and string-length($v) &gt;= 12
                      and translate(substring($v, 9, 4), $DIGITS, '') = ''">
          <xsl:value-of select="concat(' à ', substring($v, 9, 2), ':', substring($v, 11, 2))"/>
          <xsl:variable name="zone">
            <xsl:choose>
              <xsl:when test="contains($v, '+')">
                <xsl:value-of select="concat('+', substring-after($v, '+'))"/>
              </xsl:when>
              <xsl:when test="contains($v, '-')">
                <xsl:value-of select="concat('-', substring-after($v, '-'))"/>
              </xsl:when>
            </xsl:choose>
          </xsl:variable>
          <xsl:if test="string-length($zone) = 5 and $zone != '+0100' and $zone != '+0200'">
            <xsl:value-of select="concat(' (UTC', substring($zone, 1, 3), ':', substring($zone, 4, 2), ')')"/>
          </xsl:if>
        </xsl:if>
      </xsl:when>
      <xsl:when test="string-length($v) = 6 and translate($v, $DIGITS, '') = ''">
        <xsl:value-of select="concat(substring($v, 5, 2), '/', substring($v, 1, 4))"/>
      </xsl:when>
      <xsl:otherwise><xsl:value-of select="$v"/></xsl:otherwise>
    </xsl:choose>
  </xsl:template>

  <xsl:template match="*" mode="null">
    <span class="null">
      <xsl:choose>
        <xsl:when test="@nullFlavor = 'UNK'">inconnu</xsl:when>
        <xsl:when test="@nullFlavor = 'ASKU'">demandé, inconnu</xsl:when>
        <xsl:when test="@nullFlavor = 'NAV'">non disponible</xsl:when>
        <xsl:when test="@nullFlavor = 'NASK'">non demandé</xsl:when>
        <xsl:when test="@nullFlavor = 'MSK'">masqué</xsl:when>
        <xsl:when test="@nullFlavor = 'NA'">sans objet</xsl:when>
        <xsl:when test="@nullFlavor = 'OTH'">autre</xsl:when>
        <xsl:otherwise>non renseigné</xsl:otherwise>
      </xsl:choose>
    </span>
  </xsl:template>

  <xsl:template name="contact-rows">
    <xsl:for-each select="hl7:addr">
      <dt>Adresse</dt>
      <dd><xsl:apply-templates select="."/></dd>
    </xsl:for-each>
    <xsl:for-each select="hl7:telecom">
      <dt>Télécom</dt>
      <dd><xsl:apply-templates select="."/></dd>
    </xsl:for-each>
  </xsl:template>

  <!-- ===================================================================================== -->
  <!-- Body                                                                                  -->
  <!-- ===================================================================================== -->

  <xsl:template match="hl7:structuredBody">
    <main class="body">
      <xsl:apply-templates select="hl7:component/hl7:section"/>
    </main>
  </xsl:template>

  <xsl:template match="hl7:section">
    <xsl:variable name="depth" select="count(ancestor::hl7:section)"/>
    <xsl:variable name="level">
      <xsl:choose>
        <xsl:when test="$depth &gt; 3">6</xsl:when>
        <xsl:otherwise><xsl:value-of select="$depth + 2"/></xsl:otherwise>
      </xsl:choose>
    </xsl:variable>
    <xsl:variable name="title">
      <xsl:choose>
        <xsl:when test="normalize-space(hl7:title)">
          <xsl:value-of select="normalize-space(hl7:title)"/>
        </xsl:when>
        <xsl:otherwise><xsl:value-of select="hl7:code/@displayName"/></xsl:otherwise>
      </xsl:choose>
    </xsl:variable>
    <section class="cda-section">
      <xsl:if test="@ID"><xsl:attribute name="id"><xsl:value-of select="@ID"/></xsl:attribute></xsl:if>
      <xsl:if test="hl7:languageCode/@code">
        <xsl:attribute name="lang"><xsl:value-of select="hl7:languageCode/@code"/></xsl:attribute>
      </xsl:if>
      <xsl:choose>
        <!-- The PDF copy of the report itself: one line, not a table around a link. -->
        <xsl:when test="hl7:templateId/@root = $TEMPLATE-PDF-COPY and hl7:text//hl7:renderMultiMedia">
          <xsl:attribute name="class">cda-section pdf-copy</xsl:attribute>
          <p>
            <xsl:if test="$title != ''">
              <strong><xsl:value-of select="$title"/></strong>
              <xsl:text> : </xsl:text>
            </xsl:if>
            <xsl:apply-templates select="hl7:text//hl7:renderMultiMedia" mode="narrative"/>
          </p>
        </xsl:when>
        <xsl:otherwise>
          <xsl:if test="$title != ''">
            <xsl:element name="{concat('h', $level)}">
              <xsl:value-of select="$title"/>
            </xsl:element>
          </xsl:if>
          <xsl:apply-templates select="hl7:text"/>
          <xsl:apply-templates select="hl7:component/hl7:section"/>
        </xsl:otherwise>
      </xsl:choose>
    </section>
  </xsl:template>

  <xsl:template match="hl7:section/hl7:text">
    <div class="narrative">
      <xsl:apply-templates mode="narrative"/>
      <xsl:if test=".//hl7:footnote">
        <ol class="footnotes">
          <xsl:for-each select=".//hl7:footnote">
            <li>
              <xsl:attribute name="id"><xsl:call-template name="footnote-id"/></xsl:attribute>
              <xsl:apply-templates mode="narrative"/>
            </li>
          </xsl:for-each>
        </ol>
      </xsl:if>
    </div>
  </xsl:template>

  <!-- CDA R2 N1: the PDF (or text, or image) is the whole body. -->
  <xsl:template match="hl7:nonXMLBody">
    <xsl:variable name="text" select="hl7:text"/>
    <xsl:variable name="type" select="translate(normalize-space($text/@mediaType), $UPPER, $LOWER)"/>
    <main class="body non-xml">
      <xsl:choose>
        <xsl:when test="$text/hl7:reference">
          <p class="note">Le contenu du document est une référence externe, non affichée :
            <xsl:value-of select="$text/hl7:reference/@value"/></p>
        </xsl:when>
        <xsl:when test="$type = 'text/plain' and not($text/@representation = 'B64')">
          <pre class="plain"><xsl:value-of select="$text"/></pre>
        </xsl:when>
        <xsl:otherwise>
          <p class="pdf-copy">
            <xsl:call-template name="media">
              <xsl:with-param name="value" select="$text"/>
              <xsl:with-param name="label" select="'Compte rendu au format PDF (télécharger)'"/>
              <xsl:with-param name="file-name" select="''"/>
            </xsl:call-template>
          </p>
        </xsl:otherwise>
      </xsl:choose>
    </main>
  </xsl:template>

  <!-- ===================================================================================== -->
  <!-- Narrative block (CDA R2 StrucDoc.Text)                                                -->
  <!-- ===================================================================================== -->

  <!-- Anything not of the narrative schema: its text only. -->
  <xsl:template match="*" mode="narrative">
    <xsl:apply-templates mode="narrative"/>
  </xsl:template>

  <xsl:template match="hl7:content" mode="narrative">
    <xsl:choose>
      <xsl:when test="@revised = 'delete'">
        <del><xsl:call-template name="narrative-attributes"/><xsl:apply-templates mode="narrative"/></del>
      </xsl:when>
      <xsl:when test="@revised = 'insert'">
        <ins><xsl:call-template name="narrative-attributes"/><xsl:apply-templates mode="narrative"/></ins>
      </xsl:when>
      <xsl:otherwise>
        <span><xsl:call-template name="narrative-attributes"/><xsl:apply-templates mode="narrative"/></span>
      </xsl:otherwise>
    </xsl:choose>
  </xsl:template>

  <xsl:template match="hl7:paragraph" mode="narrative">
    <p>
      <xsl:call-template name="narrative-attributes"/>
      <xsl:apply-templates mode="narrative"/>
    </p>
  </xsl:template>

  <xsl:template match="hl7:paragraph/hl7:caption" mode="narrative">
    <strong class="caption"><xsl:apply-templates mode="narrative"/></strong>
    <xsl:text> </xsl:text>
  </xsl:template>

  <xsl:template match="hl7:br" mode="narrative">
    <br/>
  </xsl:template>

  <xsl:template match="hl7:sub" mode="narrative">
    <sub><xsl:apply-templates mode="narrative"/></sub>
  </xsl:template>

  <xsl:template match="hl7:sup" mode="narrative">
    <sup><xsl:apply-templates mode="narrative"/></sup>
  </xsl:template>

  <xsl:template match="hl7:list" mode="narrative">
    <xsl:apply-templates select="hl7:caption" mode="narrative"/>
    <xsl:choose>
      <xsl:when test="@listType = 'ordered'">
        <ol>
          <xsl:call-template name="narrative-attributes"/>
          <xsl:apply-templates select="hl7:item" mode="narrative"/>
        </ol>
      </xsl:when>
      <xsl:otherwise>
        <ul>
          <xsl:call-template name="narrative-attributes"/>
          <xsl:apply-templates select="hl7:item" mode="narrative"/>
        </ul>
      </xsl:otherwise>
    </xsl:choose>
  </xsl:template>

  <xsl:template match="hl7:list/hl7:caption" mode="narrative">
    <p class="caption"><xsl:apply-templates mode="narrative"/></p>
  </xsl:template>

  <xsl:template match="hl7:item" mode="narrative">
    <li>
      <xsl:call-template name="narrative-attributes"/>
      <xsl:apply-templates mode="narrative"/>
    </li>
  </xsl:template>

  <xsl:template match="hl7:item/hl7:caption" mode="narrative">
    <strong class="caption"><xsl:apply-templates mode="narrative"/></strong>
    <xsl:text> </xsl:text>
  </xsl:template>

  <xsl:template match="hl7:table" mode="narrative">
    <table>
      <xsl:call-template name="narrative-attributes"/>
      <xsl:copy-of select="@summary | @width"/>
      <xsl:apply-templates select="hl7:caption" mode="narrative"/>
      <xsl:apply-templates select="hl7:col | hl7:colgroup | hl7:thead | hl7:tbody | hl7:tfoot | hl7:tr"
          mode="narrative"/>
    </table>
  </xsl:template>

  <xsl:template match="hl7:table/hl7:caption" mode="narrative">
    <caption>
      <xsl:call-template name="narrative-attributes"/>
      <xsl:apply-templates mode="narrative"/>
    </caption>
  </xsl:template>

  <xsl:template match="hl7:colgroup | hl7:col" mode="narrative">
    <xsl:element name="{local-name()}">
      <xsl:call-template name="narrative-attributes"/>
      <xsl:copy-of select="@span | @width | @align | @valign"/>
      <xsl:apply-templates select="hl7:col" mode="narrative"/>
    </xsl:element>
  </xsl:template>

  <xsl:template match="hl7:thead | hl7:tbody | hl7:tfoot | hl7:tr" mode="narrative">
    <xsl:element name="{local-name()}">
      <xsl:call-template name="narrative-attributes"/>
      <xsl:copy-of select="@align | @valign"/>
      <xsl:apply-templates select="hl7:tr | hl7:th | hl7:td" mode="narrative"/>
    </xsl:element>
  </xsl:template>

  <xsl:template match="hl7:th | hl7:td" mode="narrative">
    <xsl:element name="{local-name()}">
      <xsl:call-template name="narrative-attributes"/>
      <xsl:copy-of select="@colspan | @rowspan | @align | @valign | @scope | @abbr | @axis | @headers"/>
      <xsl:apply-templates mode="narrative"/>
    </xsl:element>
  </xsl:template>

  <!-- Only web and mail addresses become links; anything else (javascript:, data:, file:…)
       keeps its text and loses its address. -->
  <xsl:template match="hl7:linkHtml" mode="narrative">
    <xsl:variable name="href" select="normalize-space(@href)"/>
    <xsl:variable name="start" select="translate(substring($href, 1, 8), $UPPER, $LOWER)"/>
    <xsl:choose>
      <xsl:when test="starts-with($start, 'https://') or starts-with($start, 'http://')
                      or starts-with($start, 'mailto:')">
        <a href="{$href}" rel="noopener noreferrer">
          <xsl:call-template name="narrative-attributes"/>
          <xsl:if test="@title">
            <xsl:attribute name="title"><xsl:value-of select="@title"/></xsl:attribute>
          </xsl:if>
          <xsl:apply-templates mode="narrative"/>
          <xsl:if test="not(normalize-space(.))"><xsl:value-of select="$href"/></xsl:if>
        </a>
      </xsl:when>
      <xsl:otherwise>
        <span class="inactive-link">
          <xsl:call-template name="narrative-attributes"/>
          <xsl:apply-templates mode="narrative"/>
        </span>
      </xsl:otherwise>
    </xsl:choose>
  </xsl:template>

  <!-- Footnotes are numbered in their section's text and listed at its end. -->
  <xsl:template match="hl7:footnote" mode="narrative">
    <xsl:variable name="id"><xsl:call-template name="footnote-id"/></xsl:variable>
    <sup class="footnote-ref">
      <a href="#{$id}"><xsl:number level="any" count="hl7:footnote" from="hl7:text"/></a>
    </sup>
  </xsl:template>

  <xsl:template match="hl7:footnoteRef" mode="narrative">
    <xsl:for-each select="key('footnote', @IDREF)[1]">
      <xsl:variable name="id"><xsl:call-template name="footnote-id"/></xsl:variable>
      <sup class="footnote-ref">
        <a href="#{$id}"><xsl:number level="any" count="hl7:footnote" from="hl7:text"/></a>
      </sup>
    </xsl:for-each>
  </xsl:template>

  <xsl:template name="footnote-id">
    <xsl:choose>
      <xsl:when test="@ID"><xsl:value-of select="@ID"/></xsl:when>
      <xsl:otherwise><xsl:value-of select="concat('crbio-note-', generate-id())"/></xsl:otherwise>
    </xsl:choose>
  </xsl:template>

  <xsl:template match="hl7:renderMultiMedia" mode="narrative">
    <xsl:call-template name="render-multimedia">
      <xsl:with-param name="references" select="normalize-space(@referencedObject)"/>
    </xsl:call-template>
    <xsl:if test="hl7:caption">
      <span class="media-caption"><xsl:apply-templates select="hl7:caption/node()" mode="narrative"/></span>
    </xsl:if>
  </xsl:template>

  <!-- referencedObject is a list of IDREFs: each is looked up among the observationMedia. -->
  <xsl:template name="render-multimedia">
    <xsl:param name="references"/>
    <xsl:variable name="reference" select="substring-before(concat($references, ' '), ' ')"/>
    <xsl:if test="$reference != ''">
      <xsl:variable name="media" select="key('media', $reference)[1]"/>
      <xsl:choose>
        <xsl:when test="$media">
          <xsl:call-template name="media">
            <xsl:with-param name="value" select="$media/hl7:value"/>
            <xsl:with-param name="label">
              <xsl:choose>
                <xsl:when test="ancestor::hl7:section[1]/hl7:templateId/@root = $TEMPLATE-PDF-COPY">
                  <xsl:text>Copie PDF du document</xsl:text>
                </xsl:when>
                <xsl:otherwise>Document PDF joint (télécharger)</xsl:otherwise>
              </xsl:choose>
            </xsl:with-param>
            <xsl:with-param name="file-name" select="$reference"/>
          </xsl:call-template>
        </xsl:when>
        <xsl:otherwise>
          <span class="note">[Objet multimédia introuvable dans le document]</span>
        </xsl:otherwise>
      </xsl:choose>
      <xsl:call-template name="render-multimedia">
        <xsl:with-param name="references" select="normalize-space(substring-after($references, ' '))"/>
      </xsl:call-template>
    </xsl:if>
  </xsl:template>

  <!-- An encapsulated value (ED) as inline HTML. The media type in the data: URI is one of
       ours, never the document's, so that no document can smuggle HTML or SVG in. -->
  <xsl:template name="media">
    <xsl:param name="value"/>
    <xsl:param name="label"/>
    <xsl:param name="file-name"/>
    <xsl:variable name="type" select="translate(normalize-space($value/@mediaType), $UPPER, $LOWER)"/>
    <xsl:variable name="base64" select="$value/@representation = 'B64' and not($value/hl7:reference)"/>
    <xsl:variable name="mime">
      <xsl:choose>
        <xsl:when test="not($base64)"/>
        <xsl:when test="$type = 'application/pdf'">application/pdf</xsl:when>
        <xsl:when test="$type = 'image/png'">image/png</xsl:when>
        <xsl:when test="$type = 'image/jpeg'">image/jpeg</xsl:when>
        <xsl:when test="$type = 'image/gif'">image/gif</xsl:when>
      </xsl:choose>
    </xsl:variable>
    <xsl:choose>
      <xsl:when test="$mime = 'application/pdf'">
        <a class="pdf">
          <xsl:attribute name="download">
            <xsl:call-template name="pdf-file-name">
              <xsl:with-param name="suffix" select="$file-name"/>
            </xsl:call-template>
          </xsl:attribute>
          <xsl:attribute name="href">
            <xsl:call-template name="data-uri">
              <xsl:with-param name="mime" select="$mime"/>
              <xsl:with-param name="value" select="$value"/>
            </xsl:call-template>
          </xsl:attribute>
          <xsl:value-of select="$label"/>
        </a>
      </xsl:when>
      <xsl:when test="$mime != ''">
        <img class="media">
          <xsl:attribute name="src">
            <xsl:call-template name="data-uri">
              <xsl:with-param name="mime" select="$mime"/>
              <xsl:with-param name="value" select="$value"/>
            </xsl:call-template>
          </xsl:attribute>
          <xsl:attribute name="alt">Image jointe au compte rendu</xsl:attribute>
        </img>
      </xsl:when>
      <xsl:otherwise>
        <span class="note">
          <xsl:text>[Contenu non affiché</xsl:text>
          <xsl:if test="$type != ''">
            <xsl:text> : </xsl:text>
            <xsl:value-of select="$type"/>
          </xsl:if>
          <xsl:text>]</xsl:text>
        </span>
      </xsl:otherwise>
    </xsl:choose>
  </xsl:template>

  <xsl:template name="data-uri">
    <xsl:param name="mime"/>
    <xsl:param name="value"/>
    <xsl:value-of select="concat('data:', $mime, ';base64,')"/>
    <xsl:for-each select="$value/text()">
      <xsl:value-of select="translate(., $BLANKS, '')"/>
    </xsl:for-each>
  </xsl:template>

  <!-- compte-rendu-<document id>[-<object id>].pdf, restricted to characters safe in a file name. -->
  <xsl:template name="pdf-file-name">
    <xsl:param name="suffix"/>
    <xsl:variable name="raw">
      <xsl:choose>
        <xsl:when test="$cda/hl7:id/@extension"><xsl:value-of select="$cda/hl7:id/@extension"/></xsl:when>
        <xsl:otherwise><xsl:value-of select="$cda/hl7:id/@root"/></xsl:otherwise>
      </xsl:choose>
      <xsl:if test="$suffix != ''"><xsl:value-of select="concat('-', $suffix)"/></xsl:if>
    </xsl:variable>
    <!-- The inner translate() lists the unsafe characters, the outer one removes them. -->
    <xsl:variable name="unsafe" select="translate($raw, $FILE-NAME-CHARS, '')"/>
    <xsl:variable name="safe" select="substring(translate($raw, $unsafe, ''), 1, 100)"/>
    <xsl:value-of select="concat('compte-rendu', substring('-', 1, string-length($safe)), $safe, '.pdf')"/>
  </xsl:template>

  <!-- ID, language and styleCode, the narrative attributes every element may carry. -->
  <xsl:template name="narrative-attributes">
    <xsl:if test="@ID"><xsl:attribute name="id"><xsl:value-of select="@ID"/></xsl:attribute></xsl:if>
    <xsl:if test="@language">
      <xsl:attribute name="lang"><xsl:value-of select="@language"/></xsl:attribute>
    </xsl:if>
    <xsl:if test="@styleCode">
      <xsl:variable name="codes"
          select="concat(' ', translate(normalize-space(@styleCode), $UPPER, $LOWER), ' ')"/>
      <xsl:variable name="classes">
        <xsl:if test="contains($codes, ' bold ')"> sc-bold</xsl:if>
        <xsl:if test="contains($codes, ' italics ')"> sc-italics</xsl:if>
        <xsl:if test="contains($codes, ' underline ')"> sc-underline</xsl:if>
        <xsl:if test="contains($codes, ' emphasis ')"> sc-emphasis</xsl:if>
        <xsl:if test="contains($codes, ' lrule ')"> sc-lrule</xsl:if>
        <xsl:if test="contains($codes, ' rrule ')"> sc-rrule</xsl:if>
        <xsl:if test="contains($codes, ' toprule ')"> sc-toprule</xsl:if>
        <xsl:if test="contains($codes, ' botrule ')"> sc-botrule</xsl:if>
        <xsl:if test="contains($codes, ' arabic ')"> sc-arabic</xsl:if>
        <xsl:if test="contains($codes, ' littleroman ')"> sc-littleroman</xsl:if>
        <xsl:if test="contains($codes, ' bigroman ')"> sc-bigroman</xsl:if>
        <xsl:if test="contains($codes, ' littlealpha ')"> sc-littlealpha</xsl:if>
        <xsl:if test="contains($codes, ' bigalpha ')"> sc-bigalpha</xsl:if>
        <xsl:if test="contains($codes, ' disc ')"> sc-disc</xsl:if>
        <xsl:if test="contains($codes, ' circle ')"> sc-circle</xsl:if>
        <xsl:if test="contains($codes, ' square ')"> sc-square</xsl:if>
      </xsl:variable>
      <xsl:if test="normalize-space($classes)">
        <xsl:attribute name="class"><xsl:value-of select="normalize-space($classes)"/></xsl:attribute>
      </xsl:if>
    </xsl:if>
  </xsl:template>

  <!-- ===================================================================================== -->
  <!-- Style: screen and print, no external resource                                         -->
  <!-- ===================================================================================== -->

  <xsl:template name="css">
    <xsl:text>
:root { color-scheme: light; }
body { font: 10.5pt/1.4 system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; color: #111;
       background: #fff; max-width: 62rem; margin: 1.2rem auto; padding: 0 1rem; }
h1 { font-size: 1.5em; margin: 0 0 .4em; }
h2 { font-size: 1.25em; margin: 1em 0 .4em; }
h3 { font-size: 1.1em; margin: .9em 0 .3em; }
h4, h5, h6 { font-size: 1em; margin: .8em 0 .3em; }
.notice { border: 2px solid #a40000; color: #a40000; padding: .3em .6em; font-weight: bold; margin: .4em 0; }
.note, .null { color: #555; font-style: italic; }
dl { display: grid; grid-template-columns: minmax(8em, max-content) 1fr; gap: .1em .8em; margin: 0; }
dt { color: #444; }
dd { margin: 0; }
.meta { margin-bottom: .6em; }
.id, .ins { font-family: ui-monospace, Consolas, "Liberation Mono", monospace; font-size: .95em; }
.card { border: 1px solid #bbb; border-radius: 4px; padding: .4em .7em .6em; break-inside: avoid; }
.card h2 { font-size: 1em; margin: 0 0 .4em; padding-bottom: .2em; border-bottom: 1px solid #ddd; }
.patient { border: 2px solid #333; margin: .6em 0; }
.patient .banner { font-size: 1.2em; margin: 0 0 .2em; }
.patient .ins { font-weight: bold; margin: 0 0 .4em; }
.more { margin-top: 1.5em; border-top: 2px solid #333; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(19rem, 1fr)); gap: .6em;
         margin: .6em 0 1em; }
main.body { border-top: 2px solid #333; padding-top: .4em; }
.cda-section .cda-section { margin-left: .6em; }
.narrative { margin: .3em 0 .6em; }
table { border-collapse: collapse; margin: .4em 0 .8em; width: 100%; }
caption { text-align: left; font-weight: bold; padding: .2em 0; }
th, td { border: 1px solid #bbb; padding: .15em .45em; }
th:not([valign]), td:not([valign]) { vertical-align: top; }
th { background: #eee; }
p { margin: .35em 0; }
.pdf-copy p, p.pdf-copy { margin: .6em 0; }
a.pdf { font-weight: bold; }
img.media { max-width: 100%; height: auto; display: block; margin: .3em 0; }
.media-caption { display: block; font-style: italic; }
.footnotes { font-size: .9em; }
pre.plain { white-space: pre-wrap; }
footer { margin-top: 1.5em; border-top: 1px solid #ccc; color: #666; font-size: .85em; }
.sc-bold { font-weight: bold; }
.sc-italics { font-style: italic; }
.sc-underline { text-decoration: underline; }
.sc-emphasis { font-weight: bold; font-style: italic; }
.sc-lrule { border-left: 1px solid #111; }
.sc-rrule { border-right: 1px solid #111; }
.sc-toprule { border-top: 1px solid #111; }
.sc-botrule { border-bottom: 1px solid #111; }
.sc-arabic { list-style-type: decimal; }
.sc-littleroman { list-style-type: lower-roman; }
.sc-bigroman { list-style-type: upper-roman; }
.sc-littlealpha { list-style-type: lower-alpha; }
.sc-bigalpha { list-style-type: upper-alpha; }
.sc-disc { list-style-type: disc; }
.sc-circle { list-style-type: circle; }
.sc-square { list-style-type: square; }
@page { margin: 12mm; }
@media print {
  body { max-width: none; margin: 0; padding: 0; font-size: 9.5pt; }
  .cards { grid-template-columns: 1fr 1fr; }
  th { background: none; }
  thead { display: table-header-group; }
  tr, img, .card, .patient { break-inside: avoid; }
  h2, h3, h4, h5, h6 { break-after: avoid; }
  a { color: inherit; text-decoration: none; }
}
</xsl:text>
  </xsl:template>

</xsl:stylesheet>
